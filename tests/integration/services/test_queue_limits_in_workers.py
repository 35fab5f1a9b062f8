"""Pause, resume, rate and concurrency limits as workers live them (SPEC section 9): held by
every consumer at once, and no consumer spins while a queue is paused or limited."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

from shared import queries, queue_control, transitions
from shared.queue_control import QueueLimits, RateLimit
from shared.queue_selection import QueueSelection
from shared.redis import Conn
from shared.registry import TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.commandstats import script_calls
from tests.support.seed import assert_consistent, create, ensure_test_types
from tests.support.waiting import wait_until

EVERY = QueueSelection.parse("*")


async def test_a_paused_queue_waits_while_others_run_and_starts_at_once_on_resume(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    started: dict[str, float] = {}

    async def note(payload: Any, ctx: TaskContext) -> None:
        started[ctx.task.id] = time.monotonic()

    await queue_control.pause(conn, "mail")
    mail, _ = await transitions.enqueue(conn, [create(queue="mail") for _ in range(3)], settings)
    other, _ = await transitions.enqueue(
        conn, [create(queue="reports") for _ in range(3)], settings
    )
    async with running(conn, settings, {"noop": note}, queues=EVERY) as consumer:
        for task in other:
            await wait_until(status_is(conn, task.id, "completed"), message="reports")
        await wait_until(lambda: "mail" in consumer.paused, message="the pause seen")
        assert all(t.id not in started for t in mail)
        mail_stats = await queries.get_stats(conn, dead_after_seconds=5, queue="mail")
        assert mail_stats.pending_count == 3
        claims_before = await script_calls(conn)
        await asyncio.sleep(0.3)  # paused and idle: the consumer must not poll meanwhile
        assert await script_calls(conn) - claims_before <= 1
        resumed = time.monotonic()
        await queue_control.resume(conn, "mail")
        for task in mail:
            await wait_until(status_is(conn, task.id, "completed"), message="mail after resume")
    assert max(started[t.id] for t in mail) - resumed < 0.1
    await assert_consistent(conn, queue="mail")


async def test_a_concurrency_limit_holds_across_three_workers(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    running_now, most = 0, 0

    async def hold(payload: Any, ctx: TaskContext) -> None:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        await asyncio.sleep(0.02)  # the work itself: long enough to overlap
        running_now -= 1

    await queue_control.set_limits(conn, "capped", QueueLimits(max_concurrency=2))
    tasks, _ = await transitions.enqueue(
        conn, [create(queue="capped") for _ in range(30)], settings
    )
    async with AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(
                running(conn, settings, {"noop": hold}, concurrency=4, queues=EVERY)
            )
        for task in tasks:
            await wait_until(status_is(conn, task.id, "completed"), message="capped tasks")
    assert most == 2
    await assert_consistent(conn, queue="capped")


async def test_a_rate_limit_holds_across_three_workers(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    starts: list[float] = []

    async def note(payload: Any, ctx: TaskContext) -> None:
        starts.append(time.monotonic())

    limit = QueueLimits(rate_limit=RateLimit(tasks=10, per_seconds=0.5))  # 20 per second
    await queue_control.set_limits(conn, "sms", limit)
    tasks, _ = await transitions.enqueue(conn, [create(queue="sms") for _ in range(30)], settings)
    async with AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(
                running(conn, settings, {"noop": note}, concurrency=4, queues=EVERY)
            )
        for task in tasks:
            await wait_until(status_is(conn, task.id, "completed"), message="sms", timeout=10)
    starts.sort()
    # One start every 50 ms: the 30th comes 29 intervals (1.45 s) after the first.
    assert 1.4 <= starts[-1] - starts[0] <= 1.8, starts[-1] - starts[0]
    for i in range(len(starts)):  # never more than 10 starts in any half second
        assert sum(1 for t in starts[i:] if t - starts[i] < 0.5 - 0.02) <= 10
    await assert_consistent(conn, queue="sms")
