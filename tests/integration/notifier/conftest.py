"""Fixtures: the notifier (and the scheduler, for retries) running in-process on the test Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.notifier.runner import run_notifier
from services.scheduler.runner import run_scheduler
from shared.redis import Conn
from shared.settings import Settings
from tests.integration.notifier.helpers import StartNotifier
from tests.support.waiting import describe_stuck


@pytest.fixture
async def start_notifier(conn: Conn) -> AsyncIterator[StartNotifier]:
    """start_notifier(settings, **run_notifier kwargs): notifier + scheduler until teardown."""
    stop = asyncio.Event()
    jobs: list[asyncio.Task[None]] = []

    async def start(settings: Settings, **kwargs: Any) -> None:
        jobs.append(asyncio.create_task(run_notifier(conn, settings, stop, **kwargs)))
        jobs.append(asyncio.create_task(run_scheduler(conn, settings, stop)))

    yield start
    stop.set()
    done, pending = await asyncio.wait(jobs, timeout=10) if jobs else (set(), set())
    assert not pending, "the notifier did not stop within 10 s:\n" + describe_stuck(pending)
    for job in done:
        job.result()
