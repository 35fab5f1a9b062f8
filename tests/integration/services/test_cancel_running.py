"""SPEC section 10: cancelling a running task, and progress reports, against a real Redis.

A DELETE (transitions.cancel) of a processing task only records the request; the worker
holding it interrupts the handler and ends the task cancelled, fenced by its claim token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import codec, queries, transitions
from shared.builtin_tasks import simulate_image
from shared.errors import InvalidTransition
from shared.events import Fanout
from shared.keys import EVENTS_CHANNEL
from shared.redis import Conn
from shared.registry import TaskContext
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import assert_consistent, seed_tasks
from tests.support.waiting import wait_until

CANCEL_WITHIN_SECONDS = 2.0  # SPEC section 10


@asynccontextmanager
async def events(conn: Conn) -> AsyncIterator[list[dict[str, Any]]]:
    """Every task event published while the block runs, decoded."""
    seen: list[dict[str, Any]] = []
    fanout = Fanout(conn, EVENTS_CHANNEL)

    def note(raw: str | None) -> None:
        if raw is not None:
            seen.append(codec.loads(raw))

    await fanout.open(note, timeout=5)
    try:
        yield seen
    finally:
        await fanout.aclose()


def _has(seen: list[dict[str, Any]], task_id: str, name: str) -> bool:
    return any(e["task_id"] == task_id and e["event"] == name for e in seen)


async def cancel_and_time(conn: Conn, settings: Settings, task_id: str) -> float:
    """Request the cancel of a running task; seconds until it is cancelled."""
    started = time.monotonic()
    answer = await transitions.cancel(conn, task_id, settings)
    assert answer.status in ("processing", "cancelled") and answer.cancel_requested  # a 202
    await wait_until(status_is(conn, task_id, "cancelled"), message="the task to end cancelled")
    return time.monotonic() - started


async def assert_cancelled_cleanly(conn: Conn, task_id: str) -> None:
    task = await queries.get_task(conn, task_id)
    assert task.status == "cancelled" and task.retry_count == 0  # no retry
    assert task.cancel_requested and task.completed_at is not None
    assert await conn.redis.zscore(conn.keys.leases, task_id) is None  # lease freed
    assert await conn.redis.hget(conn.keys.task(task_id), "owner") is None
    names = [e.event for e in (await queries.get_details(conn, task_id)).events]
    assert names.count("task.cancel_requested") == 1 and names[-1] == "task.cancelled"
    assert "task.retrying" not in names and "task.completed" not in names
    await assert_consistent(conn)


async def test_a_running_async_handler_is_cancelled_within_two_seconds(
    conn: Conn, settings: Settings
) -> None:
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def slow(payload: Any, ctx: TaskContext) -> str:
        if payload.get("quick"):
            return "quick"
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.set()
        return "never"

    [task] = await seed_tasks(conn, settings, max_retries=3, unique_key="only-one")
    async with running(conn, settings, {"noop": slow}, concurrency=1):
        await asyncio.wait_for(started.wait(), 5)
        async with events(conn) as seen:
            took = await cancel_and_time(conn, settings, task.id)
            # On a cluster an event crosses the cluster bus: it may come a moment later.
            await wait_until(lambda: _has(seen, task.id, "task.cancelled"), message="its event")
        assert took < CANCEL_WITHIN_SECONDS
        assert cleaned_up.is_set()  # the handler saw CancelledError
        await assert_cancelled_cleanly(conn, task.id)
        # (On a cluster, the claim's event may still be on its way across the bus.)
        assert [e["event"] for e in seen if e["task_id"] == task.id][-2:] == [
            "task.cancel_requested",
            "task.cancelled",
        ]
        # The slot is free (concurrency 1) and the unique key released.
        [after] = await seed_tasks(conn, settings, payload={"quick": True}, unique_key="only-one")
        await wait_until(status_is(conn, after.id, "completed"), message="the next task")
    await assert_consistent(conn)


async def test_a_thread_handler_sees_cancelled_and_stops(conn: Conn, settings: Settings) -> None:
    started, stopped = threading.Event(), threading.Event()

    def polite(payload: Any, ctx: TaskContext) -> str:
        started.set()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if payload["how"] == "property" and ctx.cancelled:
                    return "stopped early"  # still ends cancelled: its cancel came first
                ctx.raise_if_cancelled()
                time.sleep(0.01)
            return "never"
        finally:
            stopped.set()

    for how in ("property", "raise"):
        started.clear()
        stopped.clear()
        [task] = await seed_tasks(conn, settings, payload={"how": how}, max_retries=2)
        async with running(conn, settings, {"noop": polite}, concurrency=1):
            await wait_until(started.is_set, message="the handler to start")
            assert await cancel_and_time(conn, settings, task.id) < CANCEL_WITHIN_SECONDS
            assert stopped.is_set()
        await assert_cancelled_cleanly(conn, task.id)
        assert (await queries.get_task(conn, task.id)).result is None


async def test_a_thread_handler_that_ignores_its_cancel_is_abandoned_in_time(
    conn: Conn, settings: Settings
) -> None:
    release = threading.Event()

    def stubborn(payload: Any, ctx: TaskContext) -> str:
        if payload.get("quick"):
            return "quick"
        release.wait(10)
        return "late"

    [task] = await seed_tasks(conn, settings)
    try:
        async with running(conn, settings, {"noop": stubborn}, concurrency=1):
            await wait_until(status_is(conn, task.id, "processing"), message="it to run")
            await asyncio.sleep(0.05)
            assert await cancel_and_time(conn, settings, task.id) < CANCEL_WITHIN_SECONDS
            [after] = await seed_tasks(conn, settings, payload={"quick": True})
            await wait_until(status_is(conn, after.id, "completed"), message="the next task")
    finally:
        release.set()
    await assert_cancelled_cleanly(conn, task.id)


async def test_the_image_task_stops_within_two_seconds_and_reports_progress(
    redis_server: Any,
) -> None:
    from shared.redis import create_redis

    settings = make_settings(redis_server.url, image_task_seconds=1.0)
    conn = create_redis(settings)
    try:
        await conn.redis.flushdb()
        await conn.load_scripts()
        [done] = await seed_tasks(conn, settings, type="image", payload="a.png")
        async with events(conn) as seen, running(conn, settings, {"image": simulate_image}):
            await wait_until(status_is(conn, done.id, "completed"), message="an image task")
            await wait_until(lambda: _has(seen, done.id, "task.completed"), message="its event")
            progress = [e for e in seen if e["event"] == "task.progress"]
            assert len(progress) >= 4  # SPEC section 10
            assert [e["progress"] for e in progress] == sorted(e["progress"] for e in progress)
            assert progress[-1]["progress"] == 100
            stored = await queries.get_task(conn, done.id)
            assert stored.progress == 100 and stored.progress_message == "done"

        # Seeded once the first worker has stopped, or that one (1 s images) may finish it.
        long = make_settings(redis_server.url, image_task_seconds=30.0)
        [task] = await seed_tasks(conn, long, type="image", payload="b.png")
        async with running(conn, long, {"image": simulate_image}):
            await wait_until(status_is(conn, task.id, "processing"), message="it to run")
            assert await cancel_and_time(conn, long, task.id) < CANCEL_WITHIN_SECONDS
        await assert_cancelled_cleanly(conn, task.id)
    finally:
        await conn.aclose()


async def test_a_cancel_racing_completion_ends_one_way_only(conn: Conn, settings: Settings) -> None:
    """The handler finishing and the cancel arriving at about the same time: each task ends
    completed (its result kept) or cancelled, never both, and the books stay exact."""

    async def brief(payload: Any, ctx: TaskContext) -> int:
        await asyncio.sleep(payload["ms"] / 1000)
        return int(payload["ms"])

    tasks = []
    for i in range(30):
        tasks += await seed_tasks(conn, settings, payload={"ms": i % 10}, max_retries=3)
    answers: dict[str, str] = {}

    async def cancel_when_running(task_id: str) -> None:
        await wait_until(status_is(conn, task_id, "processing", "completed"), interval=0.001)
        try:
            answers[task_id] = str((await transitions.cancel(conn, task_id, settings)).status)
        except InvalidTransition as exc:  # it completed first: a 409
            answers[task_id] = f"refused: {exc.message}"

    async with running(conn, settings, {"noop": brief}, concurrency=8):
        await asyncio.gather(*(cancel_when_running(t.id) for t in tasks))
        await wait_until(
            lambda: _all_final(conn, [t.id for t in tasks]), message="every task to end"
        )
    ended = {"completed": 0, "cancelled": 0}
    for task in tasks:
        final = await queries.get_task(conn, task.id)
        names = [e.event for e in (await queries.get_details(conn, task.id)).events]
        assert final.status in ended, final.status
        ended[str(final.status)] += 1
        assert names.count("task.completed") + names.count("task.cancelled") == 1
        assert final.retry_count == 0 and "task.retrying" not in names
        if final.status == "completed":
            assert final.result == task.payload["ms"]
        else:
            assert final.result is None and answers[task.id] != "refused"
        if answers[task.id].startswith("refused"):
            assert final.status == "completed" and not final.cancel_requested
    await assert_consistent(conn)


async def _all_final(conn: Conn, ids: list[str]) -> bool:
    tasks = await queries.get_tasks(conn, ids)
    return all(t.status in ("completed", "cancelled") for t in tasks)


async def test_outcome_reported_first_wins_over_the_cancel(conn: Conn, settings: Settings) -> None:
    """The scripts settle the race: once completed, the cancel is refused (409), and a
    cancelled outcome reported after a completion is stale."""
    [task] = await seed_tasks(conn, settings)
    [claimed] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=5)
    assert (await transitions.cancel(conn, task.id, settings)).cancel_requested
    assert await transitions.complete(conn, task.id, claimed.token, "done", settings) == "ok"
    cancelled = transitions.Outcome(task.id, claimed.token, False, cancelled=True)
    assert await transitions.report_outcomes(conn, [cancelled], settings) == ["stale"]
    with pytest.raises(InvalidTransition):
        await transitions.cancel(conn, task.id, settings)
    final = await queries.get_task(conn, task.id)
    assert final.status == "completed" and final.result == "done" and final.cancel_requested
    await assert_consistent(conn)


async def test_a_stale_claim_can_neither_cancel_nor_report_progress(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    [old] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=5)
    lost = await transitions.fail(conn, task.id, None, "lost", settings, mode="lost:w-1")
    assert lost == ["recovered"]
    [new] = await transitions.claim(conn, "work", 1, worker="w", owner="w-2", lease_seconds=5)
    assert new.token != old.token
    assert await transitions.progress(conn, task.id, old.token, 50, "old") == "stale"
    stale = transitions.Outcome(task.id, old.token, False, cancelled=True)
    assert await transitions.report_outcomes(conn, [stale], settings) == ["stale"]
    assert await transitions.progress(conn, task.id, new.token, 40, "new") == "ok"
    current = await queries.get_task(conn, task.id)
    assert current.status == "processing" and current.progress == 40
    assert current.progress_message == "new"
    assert await transitions.progress(conn, "0" * 8 + "-0000-4000-8000-" + "0" * 12, "t", 1) == (
        "missing"
    )
    await assert_consistent(conn)


@pytest.mark.parametrize("mode", ["lease", "lost:w-dead"])
async def test_recovery_ends_a_cancel_requested_task_cancelled(
    conn: Conn, settings: Settings, mode: str
) -> None:
    """Its worker died after the cancel was requested: recovery ends it, never runs it again."""
    [task] = await seed_tasks(conn, settings, max_retries=3)
    await transitions.claim(conn, "work", 1, worker="w", owner="w-dead", lease_seconds=5)
    await transitions.cancel(conn, task.id, settings)
    await conn.redis.zadd(conn.keys.leases, {task.id: 0})  # its lease ran out
    reply = await transitions.fail(conn, task.id, None, "worker lost", settings, mode=mode)
    assert reply == ["cancelled"]
    final = await queries.get_task(conn, task.id)
    assert final.error == "cancelled on request; worker lost"
    assert await conn.redis.smembers(conn.keys.held("w-dead")) == set()
    await assert_cancelled_cleanly(conn, task.id)


async def test_a_failure_after_the_request_ends_cancelled_but_a_final_one_stays_failed(
    conn: Conn, settings: Settings
) -> None:
    tasks = await seed_tasks(conn, settings, count=2, max_retries=3)
    claimed = await transitions.claim(conn, "work", 2, worker="w", owner="w-1", lease_seconds=5)
    for item in claimed:
        await transitions.cancel(conn, item.task.id, settings)
    retryable, final = (
        transitions.Outcome(claimed[0].task.id, claimed[0].token, False, error="boom"),
        transitions.Outcome(claimed[1].task.id, claimed[1].token, False, error="bad", final=True),
    )
    codes = await transitions.report_outcomes(conn, [retryable, final], settings)
    assert codes == ["cancelled", "failed"]  # no retry; a Permanent failure keeps its outcome
    assert {t.id for t in tasks} == {c.task.id for c in claimed}
    await assert_consistent(conn)


async def test_a_worker_shutting_down_ends_a_cancel_requested_task_instead_of_handing_back(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    [item] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=5)
    await transitions.cancel(conn, task.id, settings)
    assert await transitions.requeue(conn, task.id, item.token, "shut down") == "cancel_requested"
    assert (await queries.get_task(conn, task.id)).status == "processing"  # nothing written


async def test_a_cancel_missed_while_the_control_subscription_was_down_is_caught_up(
    conn: Conn, settings: Settings
) -> None:
    started = asyncio.Event()

    async def slow(payload: Any, ctx: TaskContext) -> None:
        started.set()
        await asyncio.sleep(30)

    [task] = await seed_tasks(conn, settings)
    async with running(conn, settings, {"noop": slow}) as consumer:
        await asyncio.wait_for(started.wait(), 5)
        # As if cancel.lua's message had been published while the subscription was down.
        await conn.redis.hset(conn.keys.task(task.id), "cancel_requested", "1")
        consumer._on_control(None)  # what the Fanout tells its listeners after a drop
        await wait_until(status_is(conn, task.id, "cancelled"), timeout=CANCEL_WITHIN_SECONDS)


async def test_a_drop_while_the_catch_up_is_reading_gets_a_catch_up_of_its_own(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catch-up that read the cancel flags just before a missed cancel must not stand for
    the drop that came after it: it reads them again (CI caught the race on a slow Redis)."""
    started = asyncio.Event()
    read, go_on = asyncio.Event(), asyncio.Event()
    cancels_requested = queries.cancels_requested

    async def slow(payload: Any, ctx: TaskContext) -> None:
        started.set()
        await asyncio.sleep(30)

    async def held_after_reading(*args: Any, **kwargs: Any) -> list[str]:
        asked = await cancels_requested(*args, **kwargs)
        if not read.is_set():  # the first read, made before the cancel below
            read.set()
            await go_on.wait()
        return asked

    [task] = await seed_tasks(conn, settings)
    async with running(conn, settings, {"noop": slow}) as consumer:
        await asyncio.wait_for(started.wait(), 5)
        assert consumer.cancel_check is not None
        await asyncio.wait_for(consumer.cancel_check, 5)  # the start-up catch-up is done
        monkeypatch.setattr(queries, "cancels_requested", held_after_reading)
        consumer._on_control(None)  # a drop: a catch-up reads the flags (none set) ...
        await asyncio.wait_for(read.wait(), 5)
        await conn.redis.hset(conn.keys.task(task.id), "cancel_requested", "1")
        consumer._on_control(None)  # ... and a second drop, with a cancel missed meanwhile
        go_on.set()
        await wait_until(status_is(conn, task.id, "cancelled"), timeout=CANCEL_WITHIN_SECONDS)


async def test_progress_is_coalesced_and_the_last_value_is_kept(
    conn: Conn, settings: Settings
) -> None:
    async def chatty(payload: Any, ctx: TaskContext) -> None:
        for i in range(101):
            await ctx.progress(i, f"step {i}")
            await asyncio.sleep(0.005)

    def chatty_thread(payload: Any, ctx: TaskContext) -> None:
        for i in range(101):
            ctx.progress(i)  # a plain call: nothing to await
            time.sleep(0.005)

    for handler in (chatty, chatty_thread):
        [task] = await seed_tasks(conn, settings)
        async with events(conn) as seen, running(conn, settings, {"noop": handler}):
            started = time.monotonic()
            await wait_until(status_is(conn, task.id, "completed"), message="the task")
            took = time.monotonic() - started
            await wait_until(lambda t=task.id: _has(seen, t, "task.completed"), message="its event")
        mine = [e for e in seen if e["task_id"] == task.id and e["event"] == "task.progress"]
        assert 2 <= len(mine) <= took * 10 + 2, (len(mine), took)
        assert mine[-1]["progress"] == 100  # the trailing write
        stored = await queries.get_task(conn, task.id)
        assert stored.progress == 100
        assert stored.progress_message == ("step 100" if handler is chatty else None)
        # Progress is published, not kept in the history.
        names = [e.event for e in (await queries.get_details(conn, task.id)).events]
        assert "task.progress" not in names


async def test_an_invalid_progress_fails_the_run_like_any_error(
    conn: Conn, settings: Settings
) -> None:
    async def wrong(payload: Any, ctx: TaskContext) -> None:
        await ctx.progress(150)

    [task] = await seed_tasks(conn, settings, max_retries=0)
    async with running(conn, settings, {"noop": wrong}):
        await wait_until(status_is(conn, task.id, "failed"), message="the task to fail")
    failed = await queries.get_task(conn, task.id)
    assert failed.error is not None and "0..100" in failed.error
    assert failed.progress is None


async def test_a_retry_starts_with_no_progress_and_no_cancel_request(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings, max_retries=0)
    [item] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=5)
    assert await transitions.progress(conn, task.id, item.token, 30) == "ok"
    await transitions.cancel(conn, task.id, settings)
    cancelled = transitions.Outcome(task.id, item.token, False, cancelled=True)
    assert await transitions.report_outcomes(conn, [cancelled], settings) == ["cancelled"]
    assert (await queries.get_task(conn, task.id)).progress == 30  # kept once it ends
    again = await transitions.retry_failed(conn, task.id)
    assert again.status == "pending" and again.progress is None and not again.cancel_requested
    await assert_consistent(conn)


async def test_a_cancel_before_the_handler_starts_skips_it(conn: Conn, settings: Settings) -> None:
    """A task promoted ahead of its time is held by its worker until then: a cancel meanwhile
    ends it without calling the handler."""
    called: list[str] = []

    async def handler(payload: Any, ctx: TaskContext) -> None:
        called.append(ctx.task.id)

    due = datetime.now(UTC) + timedelta(seconds=0.8)
    [task] = await seed_tasks(conn, settings, scheduled_for=due)
    async with running(conn, settings, {"noop": handler}):
        await transitions.promote_due(conn, lead_seconds=1.0)
        await wait_until(status_is(conn, task.id, "processing"), message="it to be claimed")
        await transitions.cancel(conn, task.id, settings)
        await wait_until(status_is(conn, task.id, "cancelled"), timeout=CANCEL_WITHIN_SECONDS)
    assert called == []
    await assert_cancelled_cleanly(conn, task.id)


async def test_a_cancel_of_a_task_still_in_the_inbox_is_kept_for_its_start(
    conn: Conn, settings: Settings
) -> None:
    """A task handed over to a consumer waits in its inbox until read: a cancel that comes
    meanwhile finds no run yet, and is applied when the run starts."""
    called: list[str] = []

    async def handler(payload: Any, ctx: TaskContext) -> None:
        called.append(ctx.task.id)

    handlers: dict[str, Any] = {"noop": handler}
    # An image task: this consumer does not run the type, so it is not claimed by itself.
    [task] = await seed_tasks(conn, settings, type="image", payload="x.png")
    async with running(conn, settings, handlers) as consumer:
        await wait_until(lambda: consumer.controls and consumer.controls.subscribed.is_set())
        [item] = await transitions.claim(
            conn, "work", 1, worker="w", owner=consumer.instance_id, lease_seconds=5
        )
        await transitions.cancel(conn, task.id, settings)
        await wait_until(lambda: item.key in consumer.early_cancels, message="the cancel")
        handlers["image"] = handler
        consumer._start(item)  # as its inbox reader would, once it reads it
        await wait_until(status_is(conn, task.id, "cancelled"), timeout=CANCEL_WITHIN_SECONDS)
    assert called == []
    await assert_cancelled_cleanly(conn, task.id)


async def test_the_scheduler_recovers_a_dead_workers_cancel_requested_task_as_cancelled(
    conn: Conn, settings: Settings
) -> None:
    from services.scheduler.recover import recover_once

    [task] = await seed_tasks(conn, settings, max_retries=3)
    await transitions.claim(conn, "work", 1, worker="w", owner="w-gone", lease_seconds=5)
    await transitions.cancel(conn, task.id, settings)
    await conn.redis.zadd(conn.keys.leases, {task.id: 0})  # nobody renewed its lease
    assert await recover_once(conn, settings) == 1
    await assert_cancelled_cleanly(conn, task.id)
