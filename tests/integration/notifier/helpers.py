"""Helpers for the notifier tests: create tasks, wait for outcomes, end a task by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shared import plugins, queries, transitions
from shared.models import FINAL_STATUSES, Task, TaskCreate
from shared.redis import Conn
from shared.settings import Settings
from tests.support.waiting import wait_until

StartNotifier = Callable[..., Awaitable[None]]  # the start_notifier fixture (see conftest.py)


async def create(conn: Conn, settings: Settings, **fields: Any) -> Task:
    plugins.load_task_modules(settings)
    tasks, _ = await transitions.enqueue(conn, [TaskCreate(**fields)], settings)
    return tasks[0]


async def wait_final(conn: Conn, task_id: str, timeout: float = 15.0) -> Task:
    async def final() -> Task | None:
        task = await queries.get_task(conn, task_id)
        return task if task.status in FINAL_STATUSES else None

    task = await wait_until(final, timeout=timeout, message=f"task {task_id} to finish")
    assert task is not None
    return task


async def finish_task(
    conn: Conn, settings: Settings, webhook: str, *, ok: bool = True, **fields: Any
) -> Task:
    """A task with a completion webhook, run to completed (or failed) by hand, as a worker would."""
    task = await create(conn, settings, type="image", payload={"n": 1}, webhook=webhook, **fields)
    [claimed] = await transitions.claim(
        conn, "work", 1, worker="Test worker", owner="test-owner", lease_seconds=30
    )
    if ok:
        assert await transitions.complete(conn, task.id, claimed.token, {"ok": 1}, settings)
    else:
        await transitions.fail(conn, task.id, claimed.token, "boom", settings)
    return await queries.get_task(conn, task.id)
