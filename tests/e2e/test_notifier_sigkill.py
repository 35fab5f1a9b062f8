"""SIGKILL a notifier process while it holds a delivery and a task: both still happen."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.scheduler.runner import run_scheduler
from shared import queries
from shared.models import TaskDetails, TaskStatus
from shared.redis import Conn
from shared.settings import Settings
from tests.integration.notifier.helpers import create, finish_task, wait_final
from tests.integration.notifier.servers import Receiver
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
Spawn = Callable[[], "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn_notifier(settings: Settings, tmp_path: Path) -> Iterator[Spawn]:
    processes: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "REDIS_URL": settings.redis_url,
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            "WEBHOOK_TIMEOUT_SECONDS": "3",
            "TASK_LEASE_SECONDS": "1",
            "HEARTBEAT_SECONDS": "0.2",
            "DEAD_AFTER_SECONDS": "1",
            "RETRY_BACKOFF_SECONDS": "0.05",
            "SHUTDOWN_GRACE_SECONDS": "1",
            "INSTANCE_NAME": f"Notifier {len(processes) + 1}",
        }
        log = (tmp_path / f"notifier-{len(processes) + 1}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.notifier"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(5)


async def test_notifier_sigkill_mid_delivery_redelivers_after_restart(
    conn: Conn, settings: Settings, spawn_notifier: Spawn
) -> None:
    stop = asyncio.Event()
    scheduler = asyncio.create_task(run_scheduler(conn, settings, stop))  # recovers the task
    try:
        # The first request to each receiver hangs, so the notifier holds both when killed.
        async with (
            Receiver(statuses=[None]).running() as hooks,
            Receiver(statuses=[None]).running() as target,
        ):
            first = spawn_notifier()
            callback = await finish_task(conn, settings, hooks.url)
            task = await create(conn, settings, type="webhook", payload=target.url)

            async def both_sent() -> bool:
                return bool(hooks.requests and target.requests)

            await wait_until(both_sent, timeout=30, message="the notifier to send both requests")
            first.send_signal(signal.SIGKILL)
            assert first.wait(5) == -signal.SIGKILL

            second = spawn_notifier()
            done = await wait_final(conn, task.id, timeout=20)

            async def delivered() -> TaskDetails | None:
                details = await queries.get_details(conn, callback.id)
                outcomes = [r.outcome for r in details.webhook_deliveries]
                return details if "delivered" in outcomes else None

            details = await wait_until(delivered, timeout=20, message="the redelivery")
            second.send_signal(signal.SIGTERM)
            assert second.wait(10) == 0  # drains and exits cleanly
    finally:
        stop.set()
        await scheduler

    assert done.status == TaskStatus.COMPLETED
    assert len(target.requests) == 2
    assert len(hooks.requests) == 2
    assert len({r.headers["webhook-id"] for r in hooks.requests}) == 1
    assert details is not None
    records = details.webhook_deliveries
    assert [(r.attempt, r.outcome) for r in records] == [(1, "retrying"), (2, "delivered")]
    assert records[0].error is not None and "notifier stopped" in records[0].error
