"""The Redis Cluster and Sentinel fixtures work: checked with plain redis-py clients
(RedisCluster, Sentinel), never the project's code, against real servers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from shared.models import QUEUE_NAME_PATTERN
from tests.support.redis_cluster import NODE_TIMEOUT_MS, Cluster, run_cluster, wait_for
from tests.support.redis_sentinel import run_sentinel

BINARY = "/usr/bin/redis-server"
# A killed primary is flagged after one node timeout, FAIL spreads in the next gossip
# rounds, and its replica waits 0.5-1 s before asking for votes: about 2.5 s with 1 s
# timeouts. The bound leaves room for a busy 2-core machine.
KILL_FAILOVER_WINDOW_S = 5 * NODE_TIMEOUT_MS / 1000


@pytest.fixture(scope="module")
def binary() -> str:
    # A failure, not a skip: a skip would hide a missing install step (CI installs it).
    if not Path(BINARY).exists():
        pytest.fail(
            f"{BINARY} is missing: the topology tests need it (apt-get install redis-server)"
        )
    return BINARY


@pytest.fixture
def cluster(binary: str) -> Iterator[Cluster]:
    with run_cluster(binary) as running:
        yield running


@pytest.fixture
def cluster_client(cluster: Cluster) -> Iterator[RedisCluster]:
    """A RedisCluster client that learns the cluster from the fixture's URL."""
    addresses = urlsplit(cluster.url).netloc.split(",")
    startup_nodes = [
        ClusterNode(host, int(port)) for host, port in (a.split(":") for a in addresses)
    ]
    client = RedisCluster(
        startup_nodes=startup_nodes,
        decode_responses=True,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
    yield client
    client.close()


def counts_key(queue: str) -> str:
    return f"tq:{{{queue}}}:counts"


def test_the_cluster_has_three_primaries_each_with_a_synced_replica(cluster: Cluster) -> None:
    assert urlsplit(cluster.url).scheme == "redis+cluster"
    assert urlsplit(cluster.url).netloc.split(",") == [node.address for node in cluster.nodes]
    assert sorted(node.role for node in cluster.nodes) == ["master"] * 3 + ["slave"] * 3

    primaries = cluster.primaries()
    assert len(primaries) == 3
    replicas = {cluster.replica_of(primary).port: primary.port for primary in primaries}
    assert len(replicas) == 3
    for replica_port, primary_port in replicas.items():
        role = cluster.node_at(replica_port).command("ROLE")
        assert (role[0], int(role[2]), role[3]) == ("slave", primary_port, "connected")
    for node in cluster.nodes:
        info = node.command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_known_nodes:6" in info
        assert "cluster_slots_assigned:16384" in info


def test_a_queue_key_lands_on_the_primary_that_owns_its_slot(
    cluster: Cluster, cluster_client: RedisCluster
) -> None:
    queues = cluster.queues_on_distinct_primaries(3)

    assert all(re.match(QUEUE_NAME_PATTERN, queue) for queue in queues)
    owners = [cluster.primary_for_key(counts_key(queue)) for queue in queues]
    assert len({owner.port for owner in owners}) == 3
    for ready, (queue, owner) in enumerate(zip(queues, owners, strict=True)):
        key = counts_key(queue)
        cluster_client.hset(key, "ready", ready)
        slot = cluster.key_slot(key)
        # Asked directly, without the cluster client: only the owner holds the key.
        assert owner.client().hget(key, "ready") == str(ready)
        for primary in cluster.primaries():
            held = primary.command("CLUSTER", "COUNTKEYSINSLOT", slot)
            assert held == (1 if primary is owner else 0)
        replica = cluster.replica_of(owner)
        assert owner.command("WAIT", 1, 2000) == 1
        assert replica.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1


def test_writes_to_a_queue_succeed_through_redis_cluster_after_a_manual_failover(
    cluster: Cluster, cluster_client: RedisCluster
) -> None:
    (queue,) = cluster.queues_on_distinct_primaries(1)
    key = counts_key(queue)
    cluster_client.hincrby(key, "ready", 1)
    old_primary = cluster.primary_for_key(key)
    replica = cluster.replica_of(old_primary)
    assert old_primary.command("WAIT", 1, 2000) == 1

    started = time.monotonic()
    cluster.failover(replica)
    print(f"manual failover settled in {time.monotonic() - started:.2f}s")

    assert (replica.role, old_primary.role) == ("master", "slave")
    assert cluster.primary_for_key(key) is replica
    assert cluster.replica_of(replica) is old_primary
    # The client still maps the slot to the old primary; its MOVED answer redirects.
    assert cluster_client.hincrby(key, "ready", 1) == 2
    cluster_client.lpush(f"tq:{{{queue}}}:ready:work:3", "task-1")
    assert replica.client().hget(key, "ready") == "2"
    assert replica.client().lrange(f"tq:{{{queue}}}:ready:work:3", 0, -1) == ["task-1"]


def test_a_killed_primary_is_replaced_by_its_replica_within_the_failover_window(
    cluster: Cluster, cluster_client: RedisCluster
) -> None:
    (queue,) = cluster.queues_on_distinct_primaries(1)
    key = counts_key(queue)
    cluster_client.hset(key, "ready", 7)
    primary = cluster.primary_for_key(key)
    replica = cluster.replica_of(primary)
    assert primary.command("WAIT", 1, 2000) == 1

    cluster.kill(primary)
    started = time.monotonic()
    wait_for(lambda: replica.role == "master", KILL_FAILOVER_WINDOW_S, "the replica to take over")
    print(f"replica promoted {time.monotonic() - started:.2f}s after the kill")
    cluster.wait_ok()

    assert primary.role == "down"
    assert cluster.primary_for_key(key) is replica
    assert cluster_client.hincrby(key, "ready", 1) == 8

    cluster.restart(primary)

    # It comes back as a replica of the node that took its slots, with the data.
    assert primary.role == "slave"
    assert cluster.replica_of(replica) is primary
    slot = cluster.key_slot(key)
    assert primary.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
    assert cluster_client.hincrby(key, "ready", 1) == 9


def test_sentinel_names_the_replica_after_the_primary_is_killed(binary: str) -> None:
    with run_sentinel(binary) as setup:
        parts = urlsplit(setup.url)
        assert parts.scheme == "redis+sentinel"
        assert parts.path == "/mymaster/0"
        addresses = [
            (host, int(port)) for host, port in (a.split(":") for a in parts.netloc.split(","))
        ]
        assert [port for _, port in addresses] == [s.port for s in setup.sentinels]
        sentinel = Sentinel(addresses, socket_timeout=1.0, socket_connect_timeout=1.0)
        master = sentinel.master_for(setup.service, socket_timeout=1.0, decode_responses=True)
        old_primary, replica = setup.primary, setup.replica
        assert sentinel.discover_master(setup.service) == ("127.0.0.1", old_primary.port)
        assert sentinel.discover_slaves(setup.service) == [("127.0.0.1", replica.port)]
        master.hset("tq:{default}:counts", "ready", 3)
        assert old_primary.command("WAIT", 1, 2000) == 1

        setup.kill_primary()
        started = time.monotonic()
        promoted = setup.wait_failover()
        print(f"sentinel failover done {time.monotonic() - started:.2f}s after the kill")

        assert promoted is replica
        assert (setup.primary, setup.replica) == (replica, old_primary)
        assert setup.current_primary() == ("127.0.0.1", replica.port)
        for each in setup.sentinels:
            assert setup.primary_named_by(each) == ("127.0.0.1", replica.port)
        assert sentinel.discover_master(setup.service) == ("127.0.0.1", replica.port)
        # The same client follows the failover: its next command goes to the new primary.
        assert master.hincrby("tq:{default}:counts", "ready", 1) == 4
        assert replica.client().hget("tq:{default}:counts", "ready") == "4"

        setup.restart(old_primary)

        assert old_primary.role == "slave"
        assert sentinel.discover_slaves(setup.service) == [("127.0.0.1", old_primary.port)]
        master.close()


def test_every_process_is_killed_and_every_folder_removed_even_when_a_test_fails(
    binary: str,
) -> None:
    with pytest.raises(RuntimeError, match="the test failed"), run_cluster(binary) as cluster:
        nodes = cluster.nodes
        raise RuntimeError("the test failed")
    with pytest.raises(RuntimeError, match="the test failed"), run_sentinel(binary) as setup:
        servers = [setup.primary, setup.replica, *setup.sentinels]
        raise RuntimeError("the test failed")

    for node in [*nodes, *servers]:
        assert node.process.poll() is not None, f"{node.address} still runs"
        assert not node.directory.exists(), f"{node.directory} was left behind"
