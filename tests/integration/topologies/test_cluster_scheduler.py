"""The scheduler on a real Redis Cluster with one shard down for good: promotion, recovery
and retention go on in the other queues (SPEC section 8: a shard that is down stops only its
own queues). Before, one unreachable queue ended each pass, so every queue after it in the
registry's order stopped being promoted and recovered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.promote import UNREACHABLE_RETRY_MS, promote_all
from services.scheduler.recover import Recoverer
from services.scheduler.retention import purge_once
from shared import codec, queries, transitions
from shared.keys import QUEUES
from shared.redis import create_redis
from tests.conftest import make_settings
from tests.support.redis_cluster import Cluster, run_cluster
from tests.support.seed import create, ensure_test_types
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with run_cluster() as running_cluster:
        yield running_cluster


async def test_a_shard_down_holds_back_no_other_queue_in_the_scheduler(cluster: Cluster) -> None:
    settings = make_settings(cluster.url)
    conn = create_redis(settings)
    await conn.load_scripts()
    ensure_test_types()
    # The queue going down sorts before the others (the order the passes walk the queues
    # in), and its shard is not the one holding the registry (a documented limit).
    global_primary = cluster.primary_for_key(QUEUES)

    def primary_of(queue: str) -> object:
        return cluster.primary_for_key(conn.queue(queue).counts)

    down = next(
        q
        for q in cluster.queues_on_distinct_primaries(3, "a")
        if primary_of(q) is not global_primary
    )
    others = [
        q
        for q in cluster.queues_on_distinct_primaries(3, "z")
        if primary_of(q) is not primary_of(down)
    ]
    names = [down, *others]
    try:
        due = datetime.now(UTC) + timedelta(seconds=0.5)
        scheduled = {}
        for queue in names:
            [task], _ = await transitions.enqueue(
                conn, [create(queue=queue, scheduled_for=due)], settings
            )
            scheduled[queue] = task.id
        # A task claimed in another queue whose lease runs out while the shard is down.
        [leased], _ = await transitions.enqueue(conn, [create(queue=others[0])], settings)
        [claimed] = await transitions.claim(
            conn, "work", 1, worker="W", owner="w-gone", lease_seconds=0.3, queue=others[0]
        )
        assert claimed.task.id == leased.id
        primary = cluster.primary_for_key(conn.queue(down).counts)
        replica = cluster.replica_of(primary)
        cluster.kill(replica)
        cluster.kill(primary)

        # Passes walk the queues one after another and the dead shard's queue comes first
        # (slow: a refused connection); a pass started before the due time may straddle it,
        # so moves are added up over passes, all made while the shard stays down.
        moved = 0
        next_due: int | None = None

        async def all_promoted() -> bool:
            nonlocal moved, next_due
            count, next_due = await promote_all(conn, lead_seconds=0.0)
            moved += count
            return moved >= len(others)

        await wait_until(all_promoted, timeout=15, message="the other queues' promotions")
        assert moved == len(others)
        # The queue that could not be reached is tried again soon, not forgotten.
        assert next_due is not None and next_due <= codec.now_ms() + UNREACHABLE_RETRY_MS
        for queue in others:
            task = await queries.get_task(conn, scheduled[queue])
            assert task.status == "pending", (queue, task.status)

        recoverer = Recoverer(conn, settings)
        assert await wait_until(recoverer.tick, timeout=15, message="lease recovery") == 1
        assert down in recoverer.queue_outages.away
        assert (await queries.get_task(conn, leased.id)).status in ("pending", "retrying")
        assert await purge_once(conn) == 0  # no error for the queue it cannot reach
    finally:
        await asyncio.to_thread(cluster.restart, primary, 20)
        await asyncio.to_thread(cluster.restart, replica, 20)
        await conn.aclose()
