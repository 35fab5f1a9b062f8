"""Liveness never depends on Redis, readiness does: /livez and /readyz of the api and the
dashboard, `taskqueue-healthcheck <service> [--live]`, and the scheduler's liveness file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.app import create_app as create_api
from services.dashboard.app import create_app as create_dashboard
from services.scheduler.runner import run_scheduler
from shared import heartbeats, liveness
from shared.errors import RedisUnavailable
from shared.redis import Conn, create_redis
from shared.runtime import instance_id
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.api_server import serve
from tests.support.redis_server import free_port
from tests.support.seed import ensure_test_types
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
APPS = {"api": create_api, "dashboard": create_dashboard}


def dead_redis_url() -> str:
    """A Redis URL where nothing listens: every connection is refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


def build(service: str, settings: Settings) -> FastAPI:
    ensure_test_types()
    return APPS[service](settings)


@contextlib.contextmanager
def client_for(service: str, settings: Settings) -> Iterator[TestClient]:
    with TestClient(build(service, settings), raise_server_exceptions=False) as client:
        yield client


def healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run docker/healthcheck.py (the image's `taskqueue-healthcheck`) as compose would."""
    environ = {k: v for k, v in os.environ.items() if k not in ("HEARTBEAT_SECONDS", "REDIS_URL")}
    environ.update(PYTHONPATH=str(ROOT), HEALTHCHECK_TIMEOUT="5", **env)
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        env=environ,
        cwd=env.get("LIVENESS_DIR", str(ROOT)),  # no stray .env is read
        capture_output=True,
        text=True,
        timeout=60,
    )


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("service", ["api", "dashboard"])
def test_live_and_ready_while_redis_answers(service: str, settings: Settings, conn: Conn) -> None:
    with client_for(service, settings) as client:
        live = client.get("/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text


@pytest.mark.parametrize("service", ["api", "dashboard"])
def test_redis_down_is_live_but_not_ready(service: str) -> None:
    with client_for(service, make_settings(dead_redis_url())) as client:
        started = time.monotonic()
        ready = client.get("/readyz")
        assert time.monotonic() - started < 3, "readiness must answer within a short timeout"
        assert ready.status_code == 503
        assert int(ready.headers["Retry-After"]) > 0
        body = ready.json()
        assert body["error"].startswith("redis unavailable") and body["details"] == []
        live = client.get("/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("service", ["api", "dashboard"])
def test_probes_need_no_key_but_pass_the_request_guard(service: str, settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": "k1", "api_read_keys": "ro"})
    with client_for(service, keyed) as client:
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").status_code == 200
        guarded = "/api/stats" if service == "api" else "/api/snapshot"
        assert client.get(guarded).status_code == 401  # while other routes need the key
        for url in ("/livez", "/readyz"):  # bound to loopback: an unknown Host is refused
            assert client.get(url, headers={"Host": "evil.example"}).status_code == 403


def test_file_liveness_check_reads_no_redis(tmp_path: Path) -> None:
    env = {"LIVENESS_DIR": str(tmp_path), "REDIS_URL": dead_redis_url()}
    missing = healthcheck("worker", "--live", **env)
    assert missing.returncode == 1, missing
    liveness.touch("worker", tmp_path)
    fresh = healthcheck("worker", "--live", **env)
    assert fresh.returncode == 0, fresh
    assert "alive" in fresh.stdout
    age(liveness.path_for("worker", tmp_path), 10)
    assert healthcheck("worker", "--live", **env).returncode == 0  # within 15 s
    age(liveness.path_for("worker", tmp_path), 16)
    stale = healthcheck("worker", "--live", **env)
    assert stale.returncode == 1 and "not alive" in stale.stdout, stale
    liveness.touch("scheduler", tmp_path)
    assert healthcheck("scheduler", "--live", **env).returncode == 0
    assert healthcheck("notifier", "--live", **env).returncode == 1  # its own file only
    # Readiness (no --live) needs the heartbeat in Redis: with Redis down it fails.
    ready = healthcheck("scheduler", **env)
    assert ready.returncode == 1 and "unhealthy" in ready.stdout, ready


async def test_readiness_check_reads_this_hosts_heartbeat(
    tmp_path: Path, conn: Conn, settings: Settings
) -> None:
    env = {"LIVENESS_DIR": str(tmp_path), "REDIS_URL": settings.redis_url}
    assert healthcheck("worker", **env).returncode == 1  # no heartbeat yet
    await heartbeats.beat(conn, "worker", instance_id("worker"), {"pid": os.getpid()}, 10)
    ready = healthcheck("worker", **env)
    assert ready.returncode == 0, ready


@pytest.mark.parametrize("service", ["api", "dashboard"])
def test_http_liveness_check_survives_redis_down(service: str, tmp_path: Path) -> None:
    settings = make_settings(dead_redis_url())
    port_variable = "API_PORT" if service == "api" else "DASHBOARD_PORT"
    with serve(build(service, settings)) as base:
        env = {port_variable: base.rsplit(":", 1)[1], "LIVENESS_DIR": str(tmp_path)}
        live = healthcheck(service, "--live", **env)
        assert live.returncode == 0, live
        ready = healthcheck(service, **env)
        assert ready.returncode == 1 and "/readyz -> HTTP 503" in ready.stderr, ready
    gone = healthcheck(service, "--live", **env)  # nothing serves: not alive
    assert gone.returncode == 1


async def _run_scheduler_until(conn: Conn, settings: Settings, done: Any) -> None:
    stop = asyncio.Event()
    runner = asyncio.create_task(run_scheduler(conn, settings, stop))
    try:
        await wait_until(done, timeout=10, message="the scheduler's liveness file")
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # leaving needs Redis, which may be down
            await asyncio.wait_for(runner, 10)


async def test_scheduler_loop_touches_its_liveness_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: Conn, settings: Settings
) -> None:
    monkeypatch.setenv("LIVENESS_DIR", str(tmp_path))

    async def alive_and_beating() -> bool:
        counts = await heartbeats.live_counts(conn, settings.dead_after_seconds)
        return liveness.is_alive("scheduler", 1.0) and counts["scheduler"] == 1

    await _run_scheduler_until(conn, settings, alive_and_beating)


async def test_scheduler_stays_alive_while_redis_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVENESS_DIR", str(tmp_path))
    path = liveness.path_for("scheduler")
    path.touch()
    age(path, 60)
    settings = make_settings(dead_redis_url())
    dead = create_redis(settings)
    try:
        # Renewed on every beat although every Redis call fails.
        touches: list[float] = []

        def renewed_twice() -> bool:
            mtime = path.stat().st_mtime
            if not touches or mtime > touches[-1]:
                touches.append(mtime)
            return len(touches) >= 3 and liveness.is_alive("scheduler", 1.0)

        await _run_scheduler_until(dead, settings, renewed_twice)
    finally:
        await dead.aclose()


async def test_a_worker_keeps_its_liveness_file_fresh_while_redis_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: Conn, settings: Settings
) -> None:
    """The consumer's heartbeat loop renews the file on every round; a Redis that stops
    answering (here: the worker's connection is cut and every command fails) does not stop
    it, so the liveness probe leaves the worker alone."""
    from tests.integration.services.test_consumer import running

    monkeypatch.setenv("LIVENESS_DIR", str(tmp_path))
    fast = settings.model_copy(update={"heartbeat_seconds": 0.05})
    path = liveness.path_for("worker")
    async with running(conn, fast, {}) as consumer:
        await wait_until(lambda: liveness.is_alive("worker", 1.0), message="first touch")
        first = path.stat().st_mtime

        async def refused(*args: object, **kwargs: object) -> None:
            raise RedisUnavailable("Redis is away")

        monkeypatch.setattr(heartbeats, "beat", refused)
        await wait_until(lambda: path.stat().st_mtime > first, message="renewed without Redis")
        assert not consumer.running
    assert liveness.is_alive("worker", 1.0)
