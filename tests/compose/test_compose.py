"""`docker compose up` as a user runs it, on each Redis topology: every service healthy, tasks
flow, email arrives.

Run with `make test-compose` (CI does). COMPOSE_FILES picks the base files: on a machine that
can pull images, `docker-compose.yml` alone; here, plus `docker/compose.local.yml` (local
images). Each topology adds its overlay on top (none for one Redis, docker/compose.sentinel.yml,
docker/compose.cluster.yml) and is brought up once, for all the tests below; `-k cluster`
picks one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from shared.keys import Keys
from tests.support.redis_server import docker_available, free_port
from tests.support.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
# Up to ~1 min per bring-up on a busy 2-core machine, and the previous stack's `down` runs in
# the next one's setup: more than the suite's default 120 s.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

APP_SERVICES = ["api", "dashboard", "mailpit", "notifier", "scheduler", "worker"]


@dataclass(frozen=True)
class Topology:
    name: str
    overlay: str | None  # the compose file added to COMPOSE_FILES
    redis_services: tuple[str, ...]  # long-running, each with a health check
    one_shot: tuple[str, ...] = ()  # must have exited 0


CLUSTER_NODES = tuple(f"redis-{n}" for n in range(1, 7))
TOPOLOGIES = [
    Topology("standalone", None, ("redis",)),
    Topology(
        "sentinel",
        "docker/compose.sentinel.yml",
        ("redis-1", "redis-2", "sentinel-1", "sentinel-2", "sentinel-3"),
    ),
    Topology("cluster", "docker/compose.cluster.yml", CLUSTER_NODES, ("redis-init",)),
]


class Compose:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        files = os.environ.get("COMPOSE_FILES", "docker-compose.yml:docker/compose.local.yml")
        names = files.split(":") + ([topology.overlay] if topology.overlay else [])
        self.project = f"tqtest{topology.name[:4]}{uuid.uuid4().hex[:8]}"
        self.api_port, self.dashboard_port = free_port(), free_port()
        self.mail_ui_port, self.mail_smtp_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "API_PUBLISH_PORT": str(self.api_port),
            "DASHBOARD_PUBLISH_PORT": str(self.dashboard_port),
            "MAILPIT_UI_PUBLISH_PORT": str(self.mail_ui_port),
            "MAILPIT_SMTP_PUBLISH_PORT": str(self.mail_smtp_port),
            "REDIS_PUBLISH_PORT": str(free_port()),
            "HEALTHCHECK_INTERVAL": "2s",
        }
        if "docker/compose.local.yml" in names and topology.overlay:
            # The overlays' Redis services are new ones: compose.local.yml's image for `redis`
            # does not reach them, REDIS_IMAGE does (scripts/ci-docker.sh env exports it).
            self.env.setdefault("REDIS_IMAGE", "taskqueue-redis:7")
        self.base = ["docker", "compose", "-p", self.project]
        for name in names:
            self.base += ["-f", name]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            cwd=ROOT,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def redis_cli(self, service: str, *args: str, port: int = 6379) -> str:
        """A redis-cli command run inside `service`'s container; its output, stripped."""
        done = self.run("exec", "-T", service, "redis-cli", "-p", str(port), *args, timeout=60)
        assert done.returncode == 0, f"redis-cli {args} in {service}: {done.stderr}"
        return done.stdout.strip()


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=lambda topology: topology.name)
def compose(request: pytest.FixtureRequest) -> Iterator[Compose]:
    if shutil.which("docker") is None or not docker_available():
        pytest.fail("no Docker engine: start one (scripts/ci-docker.sh engine) to run these tests")
    stack = Compose(request.param)
    up = stack.run("up", "-d", "--wait", "--wait-timeout", "240")
    try:
        assert up.returncode == 0, (
            f"compose up failed:\n{up.stdout}\n{up.stderr}\n{stack.run('logs').stdout[-5000:]}"
        )
        yield stack
    finally:
        down = stack.run("down", "-v", "--timeout", "15")
        print(down.stdout, down.stderr)


def test_every_service_is_healthy_with_three_workers(compose: Compose) -> None:
    topology = compose.topology
    ps = compose.run("ps", "--format", "{{.Service}} {{.Health}}").stdout.split("\n")
    services = [line.split() for line in ps if line.strip()]
    assert sorted({s for s, _ in services}) == sorted([*APP_SERVICES, *topology.redis_services])
    assert all(health == "healthy" for _, health in services), services
    assert sum(1 for s, _ in services if s == "worker") == 3
    exited = compose.run("ps", "-a", "--status", "exited", "--format", "{{.Service}} {{.ExitCode}}")
    assert sorted(exited.stdout.splitlines()) == [f"{s} 0" for s in topology.one_shot]
    health = httpx.get(f"http://127.0.0.1:{compose.api_port}/api/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["services"]["worker"]["instances"] == 3
    assert health["services"]["notifier"]["instances"] >= 1
    dashboard = httpx.get(f"http://127.0.0.1:{compose.dashboard_port}/healthz", timeout=10)
    assert dashboard.status_code == 200


def test_redis_is_the_topology_the_overlay_promises(compose: Compose) -> None:
    if compose.topology.name == "standalone":
        assert compose.redis_cli("redis", "ping") == "PONG"
    elif compose.topology.name == "sentinel":
        # Every sentinel agrees on the primary, and together they can fail it over.
        for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
            primary = compose.redis_cli(
                sentinel, "sentinel", "get-master-addr-by-name", "mymaster", port=26379
            )
            assert primary.split() == ["redis-1", "6379"], (sentinel, primary)
        wait_until_sync(
            lambda: compose.redis_cli(
                "sentinel-1", "sentinel", "ckquorum", "mymaster", port=26379
            ).startswith("OK 3 usable Sentinels"),
            timeout=60,
            interval=0.5,  # each probe is a `docker compose exec`
            message="3 sentinels that know each other (SENTINEL CKQUORUM)",
        )
        wait_until_sync(
            lambda: "master_link_status:up" in compose.redis_cli("redis-2", "info", "replication"),
            timeout=60,
            interval=0.5,  # each probe is a `docker compose exec`
            message="redis-2 replicating redis-1",
        )
    else:
        primaries = cluster_primaries(compose)
        assert len(primaries) == 3, primaries
        assert "cluster_state:ok" in compose.redis_cli("redis-1", "cluster", "info")


def test_a_task_completes_and_an_email_reaches_the_catcher(compose: Compose) -> None:
    api = httpx.Client(base_url=f"http://127.0.0.1:{compose.api_port}", timeout=10)
    image = api.post("/api/tasks", json={"type": "image", "payload": "cat.png"}).json()
    address = f"compose-{uuid.uuid4().hex[:8]}@example.com"
    email = api.post("/api/tasks", json={"type": "email", "payload": address}).json()
    for task in (image, email):
        url = f"/api/tasks/{task['id']}"
        wait_until_sync(
            lambda url=url: api.get(url).json()["status"] == "completed",
            timeout=60,
            message=f"{task['type']} task to complete",
        )

    def delivered() -> bool:
        url = f"http://127.0.0.1:{compose.mail_ui_port}/api/v1/messages"
        messages = httpx.get(url, timeout=5).json()["messages"]
        return any(to["Address"] == address for m in messages for to in m["To"])

    wait_until_sync(delivered, timeout=30, message="the email in the catcher")


def test_tasks_in_named_queues_complete_on_every_shard(compose: Compose) -> None:
    """Three named queues; on the cluster, one on each primary, and each task record is
    checked to live on its queue's primary, so every shard really carried a task."""
    if compose.topology.name == "cluster":
        primaries = cluster_primaries(compose)
        queues = queues_on_distinct_primaries(primaries, 3)
    else:
        primaries, queues = {}, {f"compose-{n}": "" for n in range(3)}
    api = httpx.Client(base_url=f"http://127.0.0.1:{compose.api_port}", timeout=10)
    created = {}
    for queue in queues:
        response = api.post("/api/tasks", json={"type": "image", "payload": "x", "queue": queue})
        assert response.status_code == 201, response.text
        created[queue] = response.json()["id"]

    statuses: dict[str, str] = {}

    def all_completed() -> bool:
        for queue, task_id in created.items():
            statuses[queue] = api.get(f"/api/tasks/{task_id}").json()["status"]
        return set(statuses.values()) == {"completed"}

    try:
        wait_until_sync(all_completed, timeout=60, message="the tasks in every queue")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; statuses by queue: {statuses}, primaries {queues}") from None
    for queue, node in queues.items():
        if node:  # asked without -c: a node that does not own the slot answers MOVED
            key = Keys(queue).task(created[queue])
            assert compose.redis_cli(node, "exists", key) == "1", (queue, node, primaries)


def cluster_primaries(compose: Compose) -> dict[str, list[tuple[int, int]]]:
    """hostname -> slot ranges of every primary, from CLUSTER NODES on redis-1; waits until
    the primaries own all slots (the init service already waited for this)."""
    primaries: dict[str, list[tuple[int, int]]] = {}

    def read() -> bool:
        primaries.clear()
        for line in compose.redis_cli("redis-1", "cluster", "nodes").splitlines():
            # <id> <ip:port@bus,hostname> <flags> <primary id> ... <slot ranges>
            parts = line.split()
            if "master" in parts[2].split(",") and len(parts) > 8:
                ranges = [item.partition("-") for item in parts[8:] if not item.startswith("[")]
                primaries[parts[1].rpartition(",")[2]] = [
                    (int(first), int(last or first)) for first, _, last in ranges
                ]
        return sum(b - a + 1 for ranges in primaries.values() for a, b in ranges) == 16384

    wait_until_sync(read, timeout=30, interval=0.5, message="primaries owning all 16384 slots")
    return primaries


def queues_on_distinct_primaries(
    primaries: dict[str, list[tuple[int, int]]], n: int
) -> dict[str, str]:
    """`n` queue names whose keys (one hash tag each) live on `n` different primaries:
    name -> the primary's hostname."""
    found: dict[str, str] = {}
    for index in range(10_000):
        name = f"compose-{index}"
        slot = key_slot(Keys(name).prefix.encode())
        owner = next(h for h, ranges in primaries.items() for a, b in ranges if a <= slot <= b)
        if owner not in found.values():
            found[name] = owner
            if len(found) == n:
                return found
    raise LookupError(f"no {n} queue names on distinct primaries of {primaries}")
