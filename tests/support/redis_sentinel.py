"""A real Sentinel setup on loopback (a primary, a replica, sentinels), for topology tests."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.support.redis_cluster import (
    DATA_NODE_OPTIONS,
    Node,
    default_binary,
    distinct_free_ports,
    kill,
    kill_all,
    option_args,
    restart,
    spawn,
    wait_for,
)

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _fields(reply: object) -> dict[str, str]:
    """One instance of a SENTINEL MASTER/REPLICAS reply as strings: a map over RESP3, a flat
    [name, value, name, value, ...] list over RESP2."""
    if isinstance(reply, dict):
        return {str(name): str(value) for name, value in reply.items()}
    assert isinstance(reply, list), reply
    return {str(name): str(value) for name, value in zip(reply[::2], reply[1::2], strict=True)}


@dataclass
class SentinelSetup:
    """A running setup. `primary` and `replica` swap roles when `wait_failover` returns."""

    url: str  # "redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3/<service>/0"
    service: str
    primary: Node
    replica: Node
    sentinels: list[Node]

    def live_sentinels(self) -> list[Node]:
        return [sentinel for sentinel in self.sentinels if sentinel.alive]

    def sentinel_command(self, sentinel: Node, *args: object) -> Any:
        return sentinel.command("SENTINEL", *args)

    def primary_named_by(self, sentinel: Node) -> tuple[str, int]:
        host, port = self.sentinel_command(sentinel, "GET-MASTER-ADDR-BY-NAME", self.service)
        return str(host), int(port)

    def current_primary(self) -> tuple[str, int]:
        """(host, port) of the primary, as the first sentinel that answers names it."""
        for sentinel in self.live_sentinels():
            try:
                return self.primary_named_by(sentinel)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
        raise LookupError("no sentinel answers")

    def problems(self, sentinel: Node) -> list[str]:
        """What `sentinel` does not know yet: the primary, the live replica (synced), and
        the other live sentinels, each up. Empty when it knows them all."""
        found = []
        master = _fields(self.sentinel_command(sentinel, "MASTER", self.service))
        if int(master["port"]) != self.primary.port or master["flags"] != "master":
            found.append(f"primary {master['ip']}:{master['port']} {master['flags']}")
        if self.replica.alive:
            replicas = self._instances(sentinel, "REPLICAS")
            if replicas.get(self.replica.port) != "slave":
                found.append(f"replica {self.replica.port}: {replicas}")
            link = self.replica.info("replication").get("master_link_status")
            if link != "up":
                found.append(f"replica {self.replica.port}: master_link_status {link}")
        others = self._instances(sentinel, "SENTINELS")
        for other in self.live_sentinels():
            # "master_down" only records how that sentinel voted in the last failover.
            flags = set(others.get(other.port, "unknown").split(",")) - {"master_down"}
            if other is not sentinel and flags != {"sentinel"}:
                found.append(f"sentinel {other.port}: {others}")
        return [f"sentinel {sentinel.port} sees {problem}" for problem in found]

    def _instances(self, sentinel: Node, kind: str) -> dict[int, str]:
        """The flags of each replica or sentinel that `sentinel` knows, by port."""
        reply = self.sentinel_command(sentinel, kind, self.service)
        assert isinstance(reply, list), reply
        return {int(fields["port"]): fields["flags"] for fields in map(_fields, reply)}

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until every live sentinel knows the primary, the replica and the others."""

        def all_problems() -> list[str]:
            return [p for s in self.live_sentinels() for p in self.problems(s)]

        wait_for(lambda: not all_problems(), timeout, lambda: f"sentinels: {all_problems()}")

    def kill_primary(self) -> Node:
        """SIGKILL the primary; `wait_failover` then waits for the replica to take over."""
        kill(self.primary)
        return self.primary

    def wait_failover(self, timeout: float = 20.0) -> Node:
        """Wait until every live sentinel names the replica and it answers ROLE master;
        then swap `primary` and `replica`, wait until the sentinels are connected to the
        new primary again, and return it."""
        deadline = time.monotonic() + timeout
        promoted = self.replica

        def promoted_everywhere() -> bool:
            named = {self.primary_named_by(s)[1] for s in self.live_sentinels()}
            return named == {promoted.port} and promoted.role == "master"

        wait_for(
            promoted_everywhere,
            timeout,
            lambda: f"sentinels to name {promoted.address} as primary, now {self.named()}",
        )
        self.primary, self.replica = promoted, self.primary
        self.wait_ready(max(0.0, deadline - time.monotonic()))
        return promoted

    def named(self) -> dict[int, object]:
        """Which primary each sentinel names, for failure messages."""
        answers: dict[int, object] = {}
        for sentinel in self.live_sentinels():
            try:
                answers[sentinel.port] = self.primary_named_by(sentinel)
            except redis.RedisError as exc:
                answers[sentinel.port] = exc
        return answers

    def restart(self, node: Node, timeout: float = 15.0) -> None:
        """Start a killed server again on its port and folder, and wait until the
        sentinels know it again.

        A sentinel restarts from its config file (which it has rewritten meanwhile). A data
        server that is not the current primary restarts as a replica of it, as a deployment
        that follows sentinel would; left to itself it would come back as a second primary
        that the sentinels only demote after several seconds.
        """
        if node in self.sentinels:
            restart(node)
        else:
            host, port = self.current_primary()
            restart(node, [] if port == node.port else ["--replicaof", host, str(port)])
        self.wait_ready(timeout)


def _data_args(binary: str, port: int, directory: Path) -> list[str]:
    options: dict[str, object] = {
        "bind": "127.0.0.1",
        "port": port,
        "dir": directory,
        "logfile": directory / "redis.log",
        **DATA_NODE_OPTIONS,
    }
    return [binary, *option_args(options)]


def _write_sentinel_config(
    directory: Path, port: int, service: str, primary_port: int, quorum: int
) -> Path:
    """The sentinel's config file, in its own folder: sentinel rewrites it as it learns
    (its id, the replica, the other sentinels, a new primary after a failover)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {directory}",
                f"logfile {directory / 'redis.log'}",
                f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
                f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {service} 1",
                "",
            ]
        )
    )
    return config


@contextmanager
def run_sentinel(
    binary: str | None = None, sentinels: int = 3, service: str = "mymaster"
) -> Iterator[SentinelSetup]:
    """A primary, one replica and `sentinels` sentinels (quorum: a majority of them), every
    process killed and its folder removed on exit."""
    binary = binary or default_binary()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tq-sentinel-")))
        started: list[Node] = []
        # Runs before the folder is removed, and kills everything started so far, also when
        # the setup fails halfway.
        stack.callback(kill_all, started)
        primary_port, replica_port, *sentinel_ports = distinct_free_ports(2 + sentinels)

        primary_dir = root / "primary"
        primary = spawn(_data_args(binary, primary_port, primary_dir), primary_port, primary_dir)
        started.append(primary)
        replica_dir = root / "replica"
        replica = spawn(
            _data_args(binary, replica_port, replica_dir),
            replica_port,
            replica_dir,
            extra_args=["--replicaof", "127.0.0.1", str(primary_port)],
        )
        started.append(replica)
        # A sentinel learns replicas from the primary's INFO, which it asks for at once and
        # then only every 10 s: the replica must be online before the sentinels start.
        wait_for(
            lambda: (
                replica.info("replication").get("master_link_status") == "up"
                and primary.info("replication").get("connected_slaves") == "1"
            ),
            10.0,
            "the replica to sync",
        )

        quorum = sentinels // 2 + 1
        for index, port in enumerate(sentinel_ports):
            directory = root / f"sentinel{index}"
            config = _write_sentinel_config(directory, port, service, primary_port, quorum)
            started.append(spawn([binary, str(config), "--sentinel"], port, directory))
        setup = SentinelSetup(
            url="redis+sentinel://"
            + ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
            + f"/{service}/0",
            service=service,
            primary=primary,
            replica=replica,
            sentinels=started[2:],
        )
        setup.wait_ready()
        yield setup
