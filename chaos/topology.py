"""The Redis a chaos run stands on, and its own faults: one server (restarted), a Redis
Cluster (failovers, primaries SIGKILLed) or a Sentinel setup (the primary SIGKILLed)."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from chaos.faults import REDIS_DOWN_SECONDS, Fault
from chaos.stack import RedisProcess
from shared.keys import QUEUES, Keys
from tests.support.redis_cluster import (
    NODE_TIMEOUT_MS,
    Cluster,
    Node,
    default_binary,
    run_cluster,
)
from tests.support.redis_sentinel import DOWN_AFTER_MS, SentinelSetup, run_sentinel
from tests.support.redis_server import binary_version, redis_binaries

QUEUE_PREFIX = "chaos"  # the cluster load's queues: chaos<n>, one on each primary
PARTITION_SECONDS = 1.0  # primary-kill-partitioned: how long the replica is cut off first
REJOIN_AFTER_SECONDS = 1.0  # a killed primary is started again this long after the promotion
SETTLE_SECONDS = 30.0  # longest wait for a settled topology before a Redis fault
CUT_PASSWORD = "chaos-cut-off"  # a masterauth the primary refuses: the replica cannot resync


@dataclass
class Standalone:
    """One redis-server with AOF, SHUTDOWN or SIGKILLed and started again."""

    process: RedisProcess
    name: str = "standalone"
    queues: list[str] = field(default_factory=list)  # the load uses the default queue
    wait_replicas: int = 0

    @property
    def url(self) -> str:
        return self.process.url

    def client(self) -> redis.Redis:
        return self.process.client()

    def describe(self) -> str:
        return f"{self.process.version()}, appendonly yes, appendfsync {self.process.appendfsync}"

    def stack_env(self) -> dict[str, str]:
        return {}

    def keep_logs(self, folder: Path) -> None:
        """Its log is in the run's folder already."""

    def inject(self, fault: Fault, rng: random.Random) -> None:
        fault.at, fault.target = time.time(), "redis"
        if fault.kind == "redis-shutdown":
            self.process.shutdown()
        else:
            self.process.kill()
        time.sleep(REDIS_DOWN_SECONDS)
        self.process.start()
        fault.back_at = time.time()


def _copy_logs(nodes: list[Node], folder: Path) -> None:
    """Each server's log into `folder` (the topology's own folders go when it stops)."""
    folder.mkdir(parents=True, exist_ok=True)
    for node in nodes:
        for name in ("redis.log", "stdout.log"):
            if (node.directory / name).exists():
                shutil.copy(node.directory / name, folder / f"{node.port}-{name}")


def _offset(node: Node, field_name: str) -> int:
    return int(node.info("replication").get(field_name, "0"))


def _cut_off(primary: Node, replica: Node, fault: Fault) -> None:
    """Partition `replica` from `primary`: it can no longer authenticate to resync, and its
    link is dropped. The primary goes on acknowledging writes the replica never sees."""
    replica.command("CONFIG", "SET", "masterauth", CUT_PASSWORD)
    primary.command("CLIENT", "KILL", "TYPE", "replica")
    fault.cut_at = time.time()
    time.sleep(PARTITION_SECONDS)


def _kill_primary(primary: Node, replica: Node, fault: Fault, kill: Any) -> None:
    """Note how far the replica lags, SIGKILL the primary, and heal a cut-off replica (it
    has nothing to resync from now; the failover promotes it)."""
    try:  # the replica first: the primary only moves ahead meanwhile (an upper bound)
        replicated = _offset(replica, "slave_repl_offset")
        fault.unreplicated_bytes = _offset(primary, "master_repl_offset") - replicated
    except redis.RedisError:
        fault.unreplicated_bytes = None
    fault.at = time.time()
    kill(primary)
    if fault.cut_at:
        replica.command("CONFIG", "SET", "masterauth", "")


@dataclass
class ClusterEngine:
    """3 primaries + 3 replicas (tests/support/redis_cluster.py); the load's queues sit on
    three different primaries. Primaries are SIGKILLed only on the shards that do not hold
    the `{_global}` slot (the registry and heartbeats: README, Scaling); a manual
    CLUSTER FAILOVER moves that one too ("failover-global")."""

    cluster: Cluster
    queues: list[str]
    wait_replicas: int = 0
    name: str = "cluster"
    turns: int = 0  # faults on the other shards so far: they take turns

    @property
    def url(self) -> str:
        return self.cluster.url

    def client(self) -> RedisCluster:
        live = self.cluster.live_nodes()
        nodes = [ClusterNode("127.0.0.1", n.port) for n in live]  # type: ignore[no-untyped-call]
        return RedisCluster(
            startup_nodes=nodes, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )

    def describe(self) -> str:
        version = self.cluster.live_nodes()[0].info("server")["redis_version"]
        return (
            f"{version} Redis Cluster on loopback: 3 primaries + 3 replicas, "
            f"cluster-node-timeout {NODE_TIMEOUT_MS} ms, no persistence (replication only)"
        )

    def stack_env(self) -> dict[str, str]:
        # Every worker serves every queue of the load, with equal weights.
        return {"WORKER_QUEUES": ",".join(f"{queue}:1" for queue in self.queues)}

    def keep_logs(self, folder: Path) -> None:
        _copy_logs(self.cluster.nodes, folder)

    def global_primary(self) -> Node:
        return self.cluster.primary_for_key(QUEUES)

    def queues_on(self, primary: Node) -> list[str]:
        return [q for q in self.queues if self.cluster.primary_for_key(Keys(q).counts) is primary]

    def inject(self, fault: Fault, rng: random.Random) -> None:
        self.cluster.wait_ok(SETTLE_SECONDS)
        global_primary = self.global_primary()
        if fault.kind == "failover-global":
            primary = global_primary
        else:  # the shards without {_global}, in turn
            others = sorted(set(self.queues) - set(self.queues_on(global_primary)))
            primary = self.cluster.primary_for_key(Keys(others[self.turns % len(others)]).counts)
            self.turns += 1
        replica = self.cluster.replica_of(primary)
        fault.target = f"primary {primary.address} -> replica {replica.address}"
        fault.queues = self.queues_on(primary)
        if fault.kind.startswith("failover"):
            fault.at = time.time()
            self.cluster.failover(replica, timeout=SETTLE_SECONDS)
            fault.promoted_at = fault.back_at = time.time()
            return
        if fault.kind == "primary-kill-partitioned":
            _cut_off(primary, replica, fault)
        _kill_primary(primary, replica, fault, self.cluster.kill)
        _wait_role(replica, "master", fault)
        time.sleep(REJOIN_AFTER_SECONDS)
        self.cluster.restart(primary, timeout=SETTLE_SECONDS)  # rejoins as a replica
        fault.back_at = time.time()
        if primary.role != "slave":
            fault.note = f"{primary.address} came back as {primary.role}"


@dataclass
class SentinelEngine:
    """A primary, a replica and 3 sentinels (tests/support/redis_sentinel.py)."""

    setup: SentinelSetup
    queues: list[str] = field(default_factory=list)  # the load uses the default queue
    wait_replicas: int = 0
    name: str = "sentinel"

    @property
    def url(self) -> str:
        return self.setup.url

    def client(self) -> redis.Redis:
        host, port = self.setup.current_primary()
        return redis.Redis(
            host=host, port=port, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )

    def describe(self) -> str:
        version = self.setup.primary.info("server")["redis_version"]
        return (
            f"{version} with Sentinel on loopback: a primary, a replica, 3 sentinels (quorum 2), "
            f"down-after-milliseconds {DOWN_AFTER_MS}, no persistence (replication only)"
        )

    def stack_env(self) -> dict[str, str]:
        return {}

    def keep_logs(self, folder: Path) -> None:
        _copy_logs([self.setup.primary, self.setup.replica, *self.setup.sentinels], folder)

    def inject(self, fault: Fault, rng: random.Random) -> None:
        self.setup.wait_ready(SETTLE_SECONDS)
        primary, replica = self.setup.primary, self.setup.replica
        fault.target = f"primary {primary.address} -> replica {replica.address}"
        fault.queues = self.queues or ["default"]
        if fault.kind == "primary-kill-partitioned":
            _cut_off(primary, replica, fault)
        _kill_primary(primary, replica, fault, lambda node: self.setup.kill_primary())
        _wait_role(replica, "master", fault)
        self.setup.wait_failover(SETTLE_SECONDS)  # every sentinel names it
        time.sleep(REJOIN_AFTER_SECONDS)
        self.setup.restart(primary, timeout=SETTLE_SECONDS)  # back as a replica of the new one
        fault.back_at = time.time()


def _wait_role(node: Node, role: str, fault: Fault, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if node.role == role:
                fault.promoted_at = time.time()
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{node.address} was not {role} within {timeout:.0f} s")


Engine = Standalone | ClusterEngine | SentinelEngine


def replicated_binary() -> str:
    """A redis-server of version 7 or later (the stack needs Functions on a cluster)."""
    for binary in dict.fromkeys([default_binary(), *redis_binaries()]):
        try:
            if int(binary_version(binary).split(".")[0]) >= 7:
                return binary
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
    raise RuntimeError("no redis-server 7 or later found (REDIS_SERVER_BIN, PATH)")


@contextmanager
def open_engine(
    name: str, folder: Path, appendfsync: str = "everysec", wait_replicas: int = 0
) -> Iterator[Engine]:
    """The Redis of a run, started, and stopped on exit."""
    if name == "standalone":
        process = RedisProcess(folder / "redis", appendfsync=appendfsync)
        process.start()
        try:
            yield Standalone(process)
        finally:
            process.stop()
    elif name == "cluster":
        with run_cluster(replicated_binary()) as cluster:
            queues = cluster.queues_on_distinct_primaries(3, prefix=QUEUE_PREFIX)
            yield ClusterEngine(cluster, queues, wait_replicas)
    elif name == "sentinel":
        with run_sentinel(replicated_binary()) as setup:
            yield SentinelEngine(setup, wait_replicas=wait_replicas)
    else:
        raise ValueError(f"unknown Redis topology {name!r}")
