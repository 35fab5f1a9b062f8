"""REDIS_WAIT_REPLICAS on a real Redis Cluster when the queue's primary dies while WAIT
blocks: the create is refused (503), never acknowledged by some other node's replicas.

With FCALL and WAIT in a redis-py cluster pipeline, the pipeline resent WAIT alone to its
default node on a fresh connection once the primary died; that node's healthy replica
answered 1 and a create the dead primary never replicated was acknowledged, then lost
(found by `make chaos CHAOS_REDIS=cluster CHAOS_WAIT_REPLICAS=1`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from shared import transitions
from shared.errors import RedisUnavailable
from shared.keys import Keys
from shared.redis import create_redis
from tests.conftest import make_settings
from tests.support.redis_cluster import Cluster, Node, run_cluster, wait_for
from tests.support.seed import create, ensure_test_types


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with run_cluster() as running_cluster:
        yield running_cluster


def _kill_once_wait_blocks(cluster: Cluster, primary: Node) -> None:
    wait_for(
        lambda: int(primary.info("clients")["blocked_clients"]) >= 1,
        timeout=10,
        message="a WAIT blocked on the primary",
    )
    cluster.kill(primary)


async def test_a_primary_killed_while_wait_blocks_acknowledges_nothing(cluster: Cluster) -> None:
    settings = make_settings(cluster.url, redis_wait_replicas=1, redis_wait_timeout_ms=5000)
    conn = create_redis(settings)
    await conn.load_scripts()
    ensure_test_types()
    try:
        # A queue away from the node redis-py defaults to, where a stray WAIT would go.
        default = conn.redis.get_default_node()
        queue = next(
            q
            for q in cluster.queues_on_distinct_primaries(3)
            if conn.redis.get_node_from_key(Keys(q).counts).name != default.name
        )
        await transitions.enqueue(conn, [create(queue=queue)], settings)  # WAIT answers 1 here
        primary = cluster.primary_for_key(Keys(queue).counts)
        replica = cluster.replica_of(primary)
        # The replica stops receiving (as a lagging replica or a partition leaves it): the
        # next create's WAIT blocks, and the primary is killed under it.
        replica.command("CONFIG", "SET", "masterauth", "wrong")
        primary.command("CLIENT", "KILL", "TYPE", "replica")
        killer = threading.Thread(target=_kill_once_wait_blocks, args=(cluster, primary))
        killer.start()
        try:
            with pytest.raises(RedisUnavailable):
                await transitions.enqueue(
                    conn, [create(queue=queue)], settings, idempotency_key="k1"
                )
        finally:
            await asyncio.to_thread(killer.join)
            replica.command("CONFIG", "SET", "masterauth", "")
    finally:
        await conn.aclose()
