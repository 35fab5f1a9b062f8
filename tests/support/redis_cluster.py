"""A real Redis Cluster on loopback (primaries with replicas), for topology tests.

Also the small process helpers that tests/support/redis_sentinel.py reuses: start a
redis-server in its own folder, wait until it answers, kill it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.models import QUEUE_NAME_PATTERN
from tests.support.redis_server import free_port

DEFAULT_BINARY = "/usr/bin/redis-server"
SLOTS = 16384
NODE_TIMEOUT_MS = 1000  # short, so a killed primary is failed over in about two seconds

# Options every data server shares: nothing written to disk, nothing evicted, and a
# replica's full sync starts at once (Redis 7 waits 5 s for more replicas by default).
DATA_NODE_OPTIONS: dict[str, object] = {
    "save": "",
    "appendonly": "no",
    "maxmemory-policy": "noeviction",
    "repl-diskless-sync-delay": 0,
}


def option_args(options: dict[str, object]) -> list[str]:
    """Command-line form of server options: {"port": 7000} -> ["--port", "7000"]."""
    return [part for name, value in options.items() for part in (f"--{name}", str(value))]


def default_binary() -> str:
    """The redis-server the topology tests use: Debian's (7.x), else the one on PATH."""
    if Path(DEFAULT_BINARY).exists():
        return DEFAULT_BINARY
    return shutil.which("redis-server") or DEFAULT_BINARY


@dataclass(eq=False)  # a node is one process slot: compared by identity
class Node:
    """One redis-server process (a cluster node, a primary, a replica or a sentinel).

    `args` are kept so the process can be restarted on the same port and folder.
    """

    port: int
    directory: Path
    args: list[str]
    process: subprocess.Popen[bytes]
    bus_port: int | None = None
    node_id: str = ""  # the cluster node id (CLUSTER MYID); empty outside a cluster
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def role(self) -> str:
        """What the server says it is right now: master, slave, sentinel; "down" if killed."""
        if not self.alive:
            return "down"
        return str(self.command("ROLE")[0])

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client to this one server, reused across calls."""
        if self._client is None:
            # One immediate retry: a pooled connection is stale after a restart on this port.
            self._client = redis.Redis(
                host="127.0.0.1",
                port=self.port,
                decode_responses=True,
                socket_timeout=2.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    def command(self, *args: object) -> Any:
        """Send a raw command to this server; "CLUSTER" or "SENTINEL" as its own argument
        keeps redis-py's reply parsing out of the way."""
        return self.client().execute_command(*args)  # type: ignore[no-untyped-call]

    def info(self, section: str) -> dict[str, str]:
        """INFO <section>, every value as a string."""
        return {key: str(value) for key, value in self.client().info(section).items()}

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log files, for failure messages."""
        tails = []
        for name in ("redis.log", "stdout.log"):
            path = self.directory / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(tails)

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def wait_for(probe: Callable[[], object], timeout: float, message: Callable[[], str] | str) -> None:
    """Poll `probe` until it returns something truthy; fail with `message` at the deadline.

    A connection error counts as "not yet": the servers under test are being killed and
    restarted on purpose.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {text}")
        time.sleep(0.05)


def spawn(
    args: list[str],
    port: int,
    directory: Path,
    bus_port: int | None = None,
    extra_args: list[str] | None = None,
) -> Node:
    """Start a server (stdout and stderr go to <directory>/stdout.log) and wait for PING.

    `args` are kept for restarts; `extra_args` apply to this start only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    process = _popen(args + (extra_args or []), directory)
    node = Node(port, directory, args, process, bus_port=bus_port)
    try:
        wait_started(node)
    except BaseException:
        kill(node)
        raise
    return node


def _popen(args: list[str], directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "stdout.log").open("ab") as output:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )


def wait_started(node: Node, timeout: float = 10.0) -> None:
    """Wait until the server answers PING; fail at once, with its log, if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not node.alive:
            raise RuntimeError(
                f"redis-server on port {node.port} exited with {node.process.returncode}:\n"
                + node.log_tail()
            )
        try:
            if node.client().ping():
                return
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        except redis.ResponseError as exc:  # "LOADING": answering, not ready
            if "LOADING" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server on port {node.port} did not answer PING")
        time.sleep(0.02)


def kill(node: Node) -> None:
    """SIGKILL, as a crash would: no shutdown work, no goodbye to the other nodes."""
    if node.alive:
        node.process.send_signal(signal.SIGKILL)
    node.process.wait()
    node.close_client()


def kill_all(nodes: list[Node]) -> None:
    for node in nodes:
        kill(node)


def restart(node: Node, extra_args: list[str] | None = None) -> None:
    """Start a killed node again with its arguments (same port and folder), plus
    `extra_args` for this start only."""
    if node.alive:
        raise RuntimeError(f"node {node.address} is still running")
    node.close_client()
    node.process = _popen(node.args + (extra_args or []), node.directory)
    wait_started(node)


def distinct_free_ports(count: int) -> list[int]:
    """`count` different free ports (free_port alone may hand out the same one twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def cluster_info(node: Node) -> dict[str, str]:
    """CLUSTER INFO as a dict of strings."""
    text: str = node.command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass(frozen=True)
class ClusterEntry:
    """One line of CLUSTER NODES: one node as some node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def parse_cluster_nodes(text: str) -> list[ClusterEntry]:
    entries = []
    for line in text.strip().splitlines():
        parts = line.split()
        # "127.0.0.1:7000@17000" (or with ",hostname" in Redis 7)
        address = parts[1].split("@")[0].split(",")[0]
        slots = []
        for item in parts[8:]:
            if item.startswith("["):  # a slot being migrated or imported, not owned
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        entries.append(
            ClusterEntry(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                slots=tuple(sorted(slots)),
            )
        )
    return entries


@dataclass
class Cluster:
    """A running cluster. Helpers ask the live nodes, so they follow failovers."""

    url: str  # "redis+cluster://127.0.0.1:p1,127.0.0.1:p2,..." (every node)
    nodes: list[Node]

    def live_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    def node_at(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def view(self, node: Node | None = None) -> list[ClusterEntry]:
        """The cluster as `node` (default: the first live node) sees it."""
        node = node or self.live_nodes()[0]
        return parse_cluster_nodes(node.command("CLUSTER", "NODES"))

    def primaries(self) -> list[Node]:
        """The nodes that own slots, in slot order."""
        owners = sorted((entry.slots[0][0], entry.port) for entry in self.view() if entry.slots)
        return [self.node_at(port) for _, port in owners]

    def primary_for_slot(self, slot: int) -> Node:
        for entry in self.view():
            if any(first <= slot <= last for first, last in entry.slots):
                return self.node_at(entry.port)
        raise LookupError(f"no node owns slot {slot}")

    def key_slot(self, key: str) -> int:
        return int(self.live_nodes()[0].command("CLUSTER", "KEYSLOT", key))

    def primary_for_key(self, key: str) -> Node:
        return self.primary_for_slot(self.key_slot(key))

    def replica_of(self, node: Node) -> Node:
        """A live replica of `node` (asked from another node's view if `node` is down)."""
        for entry in self.view():
            if entry.master_id == node.node_id and not entry.failing:
                replica = self.node_at(entry.port)
                if replica.alive:
                    return replica
        raise LookupError(f"{node.address} has no live replica")

    def queues_on_distinct_primaries(self, n: int, prefix: str = "q") -> list[str]:
        """`n` valid queue names whose keys (`tq:{name}:...`) live on `n` different primaries."""
        owners = {(first, last): entry.port for entry in self.view() for first, last in entry.slots}
        if n > len(set(owners.values())):
            raise ValueError(f"{n} queues on distinct primaries, but {owners} own slots")
        names: list[str] = []
        taken: set[int] = set()
        for index in range(10_000):
            name = f"{prefix}{index}"
            if not re.match(QUEUE_NAME_PATTERN, name):
                raise ValueError(f"prefix {prefix!r} gives invalid queue names like {name!r}")
            slot = self.key_slot(f"tq:{{{name}}}:counts")
            port = next(port for (a, b), port in owners.items() if a <= slot <= b)
            if port not in taken:
                taken.add(port)
                names.append(name)
                if len(names) == n:
                    return names
        raise LookupError(f"no {n} queue names on distinct primaries")

    def problems(self) -> list[str]:
        """Why the cluster is not settled yet; empty when it is.

        Settled means: every live node says cluster_state:ok, all live nodes agree on who
        owns which slots and who replicates whom, all 16384 slots belong to live primaries,
        no live node is flagged failing in any view, and every live replica's link is up.
        """
        found: list[str] = []
        live = self.live_nodes()
        live_ports = {node.port for node in live}
        layouts: dict[int, object] = {}
        for node in live:
            try:
                state = cluster_info(node).get("cluster_state")
                if state != "ok":
                    found.append(f"{node.address}: cluster_state {state}")
                entries = self.view(node)
                by_id = {entry.node_id: entry for entry in entries}
                for entry in entries:
                    if entry.port in live_ports and entry.failing:
                        found.append(f"{node.address} sees {entry.port} as {sorted(entry.flags)}")
                layouts[node.port] = sorted(
                    (
                        entry.port,
                        entry.is_master,
                        by_id[entry.master_id].port if entry.master_id in by_id else None,
                        entry.slots,
                    )
                    for entry in entries
                    if entry.port in live_ports
                )
                covered = sum(
                    last - first + 1
                    for entry in entries
                    if entry.port in live_ports and entry.is_master
                    for first, last in entry.slots
                )
                if covered != SLOTS:
                    found.append(f"{node.address}: live primaries own {covered} slots")
                if node.role == "slave":
                    link = node.info("replication").get("master_link_status")
                    if link != "up":
                        found.append(f"{node.address}: master_link_status {link}")
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                found.append(f"{node.address}: {exc}")
        if len({repr(layout) for layout in layouts.values()}) > 1:
            found.append(f"nodes disagree on the layout: {layouts}")
        return found

    def wait_ok(self, timeout: float = 10.0) -> None:
        """Wait until the cluster is settled (see `problems`)."""
        wait_for(
            lambda: not self.problems(), timeout, lambda: f"a settled cluster: {self.problems()}"
        )

    def failover(self, replica: Node, timeout: float = 10.0) -> None:
        """A manual failover: `replica` becomes the primary of its slots, its old primary
        its replica, and the cluster is settled again."""
        if replica.role != "slave":
            raise ValueError(f"{replica.address} is a {replica.role}, not a replica")
        deadline = time.monotonic() + timeout
        replica.command("CLUSTER", "FAILOVER")
        wait_for(lambda: replica.role == "master", timeout, f"{replica.address} to be master")
        self.wait_ok(max(0.0, deadline - time.monotonic()))

    def kill(self, node: Node) -> None:
        """SIGKILL one node; its replica is promoted after about NODE_TIMEOUT_MS + a second."""
        kill(node)

    def restart(self, node: Node, timeout: float = 10.0) -> None:
        """Start a killed node again (same port, same nodes.conf); it rejoins, as a replica
        if its slots were failed over meanwhile, and the cluster settles."""
        restart(node)
        self.wait_ok(timeout)


def _cluster_node_args(binary: str, port: int, bus_port: int, directory: Path) -> list[str]:
    options: dict[str, object] = {
        "bind": "127.0.0.1",
        "port": port,
        # The bus port defaults to port + 10000, past 65535 for most ephemeral ports.
        "cluster-port": bus_port,
        "dir": directory,
        "logfile": directory / "redis.log",
        "cluster-enabled": "yes",
        "cluster-config-file": directory / "nodes.conf",
        "cluster-node-timeout": NODE_TIMEOUT_MS,
        "cluster-require-full-coverage": "no",
        "cluster-allow-reads-when-down": "no",
        **DATA_NODE_OPTIONS,
    }
    return [binary, *option_args(options)]


def _start_cluster_node(binary: str, directory: Path, attempts: int = 3) -> Node:
    """Start a node on fresh ports, trying again if another process took a port meanwhile."""
    for attempt in range(attempts):
        port, bus_port = distinct_free_ports(2)
        args = _cluster_node_args(binary, port, bus_port, directory)
        try:
            return spawn(args, port, directory, bus_port)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _slot_ranges(primaries: int) -> list[tuple[int, int]]:
    bounds = [SLOTS * index // primaries for index in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


@contextmanager
def run_cluster(
    binary: str | None = None, primaries: int = 3, replicas_per_primary: int = 1
) -> Iterator[Cluster]:
    """A cluster of `primaries` primaries with `replicas_per_primary` replicas each, formed
    with raw CLUSTER commands, and every process killed and its folder removed on exit.

    Node i (i < primaries) is primary i; the replicas follow, each group in primary order.
    """
    binary = binary or default_binary()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tq-cluster-")))
        nodes: list[Node] = []
        # Runs before the folder is removed, and kills every node started so far, also
        # when forming the cluster fails halfway.
        stack.callback(kill_all, nodes)
        for index in range(primaries * (1 + replicas_per_primary)):
            nodes.append(_start_cluster_node(binary, root / f"node{index}"))
        for node in nodes:
            node.node_id = node.command("CLUSTER", "MYID")
        # Slots and distinct config epochs before MEET, as `redis-cli --cluster create`
        # does: SET-CONFIG-EPOCH works only while a node knows no other node, and distinct
        # epochs spare the nodes a round of epoch-collision resolution.
        for index, node in enumerate(nodes):
            node.command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        for node, (first, last) in zip(nodes[:primaries], _slot_ranges(primaries), strict=True):
            node.command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for node in nodes[1:]:
            # MEET also assumes port + 10000 for the bus unless told.
            nodes[0].command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        cluster = Cluster(url="redis+cluster://" + ",".join(n.address for n in nodes), nodes=nodes)

        def everyone_knows_everyone() -> bool:
            for node in nodes:
                entries = cluster.view(node)
                if len(entries) != len(nodes) or any(entry.failing for entry in entries):
                    return False
            return True

        wait_for(everyone_knows_everyone, 10.0, lambda: "every node to know every node")
        for index, replica in enumerate(nodes[primaries:]):
            primary = nodes[index % primaries]
            replica.command("CLUSTER", "REPLICATE", primary.node_id)
        wait_for(
            lambda: all(node.role == "slave" for node in nodes[primaries:]),
            10.0,
            "every replica to report role slave",
        )
        cluster.wait_ok(15.0)
        yield cluster
