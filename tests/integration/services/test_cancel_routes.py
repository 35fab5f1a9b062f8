"""SPEC section 10 through the HTTP routes: DELETE of a running task answers 202 and the
worker ends it cancelled; the dashboard's cancel works on a running task and its rows carry
progress."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from services.api.app import create_app as create_api
from services.dashboard.app import create_app as create_dashboard
from shared import monitoring, transitions
from shared.redis import Conn
from shared.registry import TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.api_server import serve
from tests.support.seed import assert_consistent, ensure_test_types, seed_tasks
from tests.support.waiting import wait_until


async def test_delete_of_a_running_task_answers_202_then_it_ends_cancelled(
    conn: Conn, settings: Settings
) -> None:
    started = asyncio.Event()

    async def slow(payload: Any, ctx: TaskContext) -> None:
        await ctx.progress(10, "warming up")
        started.set()
        await asyncio.sleep(30)

    ensure_test_types()
    [task] = await seed_tasks(conn, settings)
    [pending] = await seed_tasks(conn, settings, scheduled_for="2999-01-01T00:00:00Z")
    with serve(create_api(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            async with running(conn, settings, {"noop": slow}):
                await asyncio.wait_for(started.wait(), 5)
                await wait_until(
                    lambda: _progress_of(http, task.id, 10), message="progress on the task"
                )
                reply = await http.delete(f"/api/tasks/{task.id}")
                assert reply.status_code == 202, reply.text
                body = reply.json()
                # Read right after the request: its worker may have ended it already.
                assert body["cancel_requested"] is True
                assert body["status"] in ("processing", "cancelled")
                assert body["progress"] == 10 and body["progress_message"] == "warming up"
                await wait_until(status_is(conn, task.id, "cancelled"), timeout=2)
            final = (await http.get(f"/api/tasks/{task.id}")).json()
            assert final["status"] == "cancelled" and final["cancel_requested"] is True
            assert (await http.delete(f"/api/tasks/{task.id}")).status_code == 409
            # Not running: cancelled at once, as before.
            other = await http.delete(f"/api/tasks/{pending.id}")
            assert other.status_code == 200 and other.json()["status"] == "cancelled"
            assert other.json()["cancel_requested"] is False
    await assert_consistent(conn)


async def _progress_of(http: httpx.AsyncClient, task_id: str, percent: float) -> bool:
    return bool((await http.get(f"/api/tasks/{task_id}")).json()["progress"] == percent)


async def test_the_dashboard_cancels_a_running_task_and_shows_its_progress(
    conn: Conn, settings: Settings
) -> None:
    started = asyncio.Event()

    async def slow(payload: Any, ctx: TaskContext) -> None:
        await ctx.progress(42.5, "halfway-ish")
        started.set()
        await asyncio.sleep(30)

    ensure_test_types()
    [task] = await seed_tasks(conn, settings)
    with serve(create_dashboard(settings, tick_seconds=0.1)) as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            running(conn, settings, {"noop": slow}),
        ):
            await asyncio.wait_for(started.wait(), 5)
            await wait_until(
                lambda: _row_progress(conn, task.id, 42.5), message="the row's progress"
            )
            reply = await http.post(f"/api/tasks/{task.id}/cancel")
            assert reply.status_code == 200, reply.text
            row = reply.json()["task"]
            assert row["status"] in ("processing", "cancelled") and row["cancel_requested"] is True
            assert row["progress"] == 42.5 and row["progress_message"] == "halfway-ish"
            await wait_until(status_is(conn, task.id, "cancelled"), timeout=2)
    [row] = await monitoring.task_rows(conn, [task.id])
    assert row["status"] == "cancelled" and row["progress"] == 42.5
    await assert_consistent(conn)


async def _row_progress(conn: Conn, task_id: str, percent: float) -> bool:
    rows = await monitoring.task_rows(conn, [task_id])
    return bool(rows and rows[0]["progress"] == percent)


async def test_cancel_of_a_task_that_just_finished_is_a_clear_409(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    [item] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=5)
    assert await transitions.complete(conn, task.id, item.token, 1, settings) == "ok"
    with serve(create_api(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            reply = await http.delete(f"/api/tasks/{task.id}")
    assert reply.status_code == 409
    assert "completed" in reply.json()["error"]
