"""Worker, scheduler and notifier started before Redis answers (a pod scheduled during an
outage, compose starting everything at once) wait for it and then work, with no restart
(issue 13); their liveness files stay fresh meanwhile, a stop while waiting is a clean exit,
and a server too old to run the project is refused at once with a message saying so."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import heartbeats, liveness, queries, transitions
from shared.errors import UnsupportedRedis
from shared.models import TaskCreate
from shared.redis import create_redis
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.redis_server import free_port, redis_binaries, run_binary
from tests.support.seed import ensure_test_types
from tests.support.service_process import Service
from tests.support.waiting import wait_until

SERVICES = ("worker", "scheduler", "notifier")


@pytest.fixture
def services_before_redis(tmp_path: Path) -> Iterator[tuple[int, list[Service]]]:
    port = free_port()
    started = [Service(name, f"redis://127.0.0.1:{port}/0", tmp_path) for name in SERVICES]
    try:
        yield port, started
    finally:
        for service in started:
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()


async def test_services_started_before_redis_wait_for_it_and_then_work(
    services_before_redis: tuple[int, list[Service]], tmp_path: Path
) -> None:
    ensure_test_types()  # the built-in types, for the create below
    port, started = services_before_redis
    for service in started:
        await wait_until(
            lambda s=service: s.said("waiting for Redis") or s.process.poll() is not None,
            timeout=30,
            message=f"{service.name} waiting",
        )
        assert service.process.poll() is None, "".join(service.lines)
        # Healthy, only waiting: its liveness file is kept fresh (a probe must not kill it).
        assert liveness.is_alive(service.name, 5.0, tmp_path)
    with run_binary(redis_binaries()[0], port=port) as (server, _):
        settings: Settings = make_settings(server.url)
        conn = create_redis(settings)
        try:
            await conn.load_scripts()

            async def all_beating() -> bool:
                counts = await heartbeats.live_counts(conn, 5)
                return all(counts[name] == 1 for name in SERVICES)

            await wait_until(all_beating, timeout=30, message="every service beating")
            [task], _ = await transitions.enqueue(
                conn, [TaskCreate(type="image", payload={"n": 1})], settings
            )

            async def completed() -> bool:
                found = await queries.get_task(conn, task.id)
                return found.status == "completed"

            await wait_until(completed, timeout=30, message="the task run by the waiting worker")
        finally:
            await conn.aclose()
        for service in started:
            assert service.stop() == 0, "".join(service.lines)


def test_a_service_stopped_while_waiting_for_redis_exits_cleanly(tmp_path: Path) -> None:
    worker = Service("worker", f"redis://127.0.0.1:{free_port()}/0", tmp_path)
    try:
        wait_for_line(worker, "waiting for Redis")
        assert worker.stop() == 0, "".join(worker.lines)
        assert worker.said("worker stopped before Redis answered")
    finally:
        if worker.process.poll() is None:
            worker.process.kill()


def wait_for_line(service: Service, text: str, timeout: float = 30.0) -> None:
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.05):
            if service.said(text) or service.process.poll() is not None:
                done.set()

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    watcher.join(timeout)
    done.set()
    assert service.said(text), "".join(service.lines)


async def test_a_redis_older_than_6_2_is_refused_with_a_clear_message(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 11 and Ubuntu 22.04 ship redis-server 6.0, where every claim would fail (LPOP
    with a count): refused at start, not retried as if Redis were merely down."""
    conn = create_redis(settings)
    real_info = conn.redis.info

    async def old_info(section: str | None = None, *args: object, **kwargs: object) -> object:
        reply = dict(await real_info(section, *args, **kwargs))
        reply["redis_version"] = "6.0.16"
        return reply

    monkeypatch.setattr(conn.redis, "info", old_info)
    try:
        with pytest.raises(UnsupportedRedis, match=r"Redis 6\.0\.16 is too old.*6\.2 or later"):
            await conn.load_scripts()
    finally:
        await conn.aclose()
