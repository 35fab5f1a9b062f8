"""The shared consumer loop (what every worker runs) against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from shared import heartbeats, queries, transitions
from shared.consumer import Consumer
from shared.queue_selection import QueueSelection
from shared.redis import Conn
from shared.registry import Handler, TaskContext
from shared.settings import Settings
from tests.integration.scripts.test_transitions import forget_scripts
from tests.support.commandstats import command_calls, script_calls
from tests.support.seed import assert_consistent, ensure_test_types, seed_tasks
from tests.support.waiting import wait_until


@asynccontextmanager
async def running(
    conn: Conn,
    settings: Settings,
    handlers: dict[str, Handler],
    concurrency: int = 4,
    queues: QueueSelection | None = None,
    name: str = "Worker T",
) -> AsyncIterator[Consumer]:
    # The consumer runs the registered types its handlers cover, read as it starts.
    ensure_test_types()
    consumer = Consumer(
        conn,
        settings,
        service="worker",
        lane="work",
        name=name,
        concurrency=concurrency,
        lookup=handlers.get,
        queues=queues,
    )
    stop = asyncio.Event()
    job = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(job, 10)


def status_is(conn: Conn, task_id: str, *statuses: str) -> Callable[[], Any]:
    async def probe() -> bool:
        return (await queries.get_task(conn, task_id)).status in statuses

    return probe


async def test_async_and_plain_handlers_complete_with_results(
    conn: Conn, settings: Settings
) -> None:
    async def double(payload: Any, ctx: TaskContext) -> Any:
        return payload["n"] * 2

    def threaded(payload: Any, ctx: TaskContext) -> Any:
        return threading.current_thread() is not threading.main_thread()

    [a] = await seed_tasks(conn, settings, type="noop", payload={"n": 21})
    async with running(conn, settings, {"noop": double}):
        await wait_until(status_is(conn, a.id, "completed"), message="async handler")
    assert (await queries.get_task(conn, a.id)).result == 42
    [b] = await seed_tasks(conn, settings)
    async with running(conn, settings, {"noop": threaded}):
        await wait_until(status_is(conn, b.id, "completed"), message="plain handler")
    assert (await queries.get_task(conn, b.id)).result is True
    await assert_consistent(conn)


async def test_plain_handler_does_not_block_the_loop(conn: Conn, settings: Settings) -> None:
    release = threading.Event()

    def slow(payload: Any, ctx: TaskContext) -> str:
        release.wait(30)  # held until the fast one has run: no race with a slow box
        return "slow"

    async def fast(payload: Any, ctx: TaskContext) -> str:
        return "fast"

    [s] = await seed_tasks(conn, settings, type="noop", priority=5)
    await seed_tasks(conn, settings, type="image")
    async with running(conn, settings, {"noop": slow, "image": fast}):
        await wait_until(lambda: _count(conn, "completed", 1), timeout=2, message="fast task")
        assert (await queries.get_task(conn, s.id)).status == "processing"
        release.set()
        await wait_until(status_is(conn, s.id, "completed"), message="slow task")


async def _count(conn: Conn, status: str, at_least: int) -> bool:
    return int(await conn.redis.hget(conn.keys.counts, status) or 0) >= at_least


async def test_raising_handler_retries_then_fails_with_error(
    conn: Conn, settings: Settings
) -> None:
    calls = 0

    async def broken(payload: Any, ctx: TaskContext) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad input")

    [task] = await seed_tasks(conn, settings, max_retries=2)
    from services.scheduler.promote import promote_loop

    stop = asyncio.Event()
    scheduler = asyncio.create_task(promote_loop(conn, stop))
    async with running(conn, settings, {"noop": broken}):
        await wait_until(status_is(conn, task.id, "failed"), message="final failure")
    stop.set()
    await scheduler
    final = await queries.get_task(conn, task.id)
    assert calls == 3 and final.retry_count == 2
    assert final.error == "ValueError: bad input"
    await assert_consistent(conn)


async def test_timeout_and_unserialisable_result_fail_clearly(
    conn: Conn, settings: Settings
) -> None:
    async def hang(payload: Any, ctx: TaskContext) -> None:
        await asyncio.sleep(30)

    async def weird(payload: Any, ctx: TaskContext) -> object:
        return object()

    [slow] = await seed_tasks(conn, settings, type="noop", max_retries=0, timeout_seconds=0.2)
    [odd] = await seed_tasks(conn, settings, type="image", max_retries=0)
    async with running(conn, settings, {"noop": hang, "image": weird}):
        await wait_until(status_is(conn, slow.id, "failed"), message="timeout")
        await wait_until(status_is(conn, odd.id, "failed"), message="bad result")
    assert (await queries.get_task(conn, slow.id)).error == "timed out after 0.2s"
    assert "TypeError" in ((await queries.get_task(conn, odd.id)).error or "")


async def test_stop_drains_then_hands_back_what_is_still_running(
    conn: Conn, settings: Settings
) -> None:
    release = asyncio.Event()

    async def quick(payload: Any, ctx: TaskContext) -> str:
        await asyncio.sleep(0.05)
        return "done"

    async def stuck(payload: Any, ctx: TaskContext) -> None:
        await release.wait()

    [q] = await seed_tasks(conn, settings, type="image")
    [s] = await seed_tasks(conn, settings, type="noop")
    async with running(conn, settings, {"image": quick, "noop": stuck}):
        await wait_until(status_is(conn, s.id, "processing"), message="stuck task started")
    assert (await queries.get_task(conn, q.id)).status == "completed"
    handed_back = await queries.get_task(conn, s.id)
    assert handed_back.status == "pending" and handed_back.retry_count == 0
    assert await conn.redis.zcard(conn.keys.heartbeats("worker")) == 0
    await assert_consistent(conn)


async def test_heartbeat_counts_worker_and_extends_leases(conn: Conn, settings: Settings) -> None:
    gate = asyncio.Event()

    async def wait(payload: Any, ctx: TaskContext) -> None:
        await gate.wait()

    [task] = await seed_tasks(conn, settings)
    async with running(conn, settings, {"noop": wait}):
        await wait_until(status_is(conn, task.id, "processing"), message="claim")
        first = await conn.redis.zscore(conn.keys.leases, task.id)

        async def extended() -> bool:
            return (await conn.redis.zscore(conn.keys.leases, task.id) or 0) > (first or 0)

        await wait_until(extended, message="lease renewal")
        stats = await queries.get_stats(conn, dead_after_seconds=settings.dead_after_seconds)
        assert stats.worker_count == 1
        gate.set()
        await wait_until(status_is(conn, task.id, "completed"), message="completion")


async def test_thousands_of_tasks_with_random_outcomes_keep_counts_exact(
    conn: Conn, settings: Settings
) -> None:
    import random

    rng = random.Random(7)

    async def flaky(payload: Any, ctx: TaskContext) -> int:
        if rng.random() < 0.3:
            raise RuntimeError("flaky")
        return 1

    await seed_tasks(conn, settings, count=2000, max_retries=1)
    tasks = await seed_tasks(conn, settings, count=200)
    for task in tasks[:100]:
        await transitions.cancel(conn, task.id, settings)
    from services.scheduler.promote import promote_loop

    stop = asyncio.Event()
    scheduler = asyncio.create_task(promote_loop(conn, stop))
    async with running(conn, settings, {"noop": flaky}, concurrency=64):

        async def drained() -> bool:
            c = await conn.redis.hgetall(conn.keys.counts)
            return sum(int(c.get(s, 0)) for s in ("completed", "failed", "cancelled")) == 2200

        await wait_until(drained, timeout=60, message="all tasks final")
    stop.set()
    await scheduler
    recorded = await assert_consistent(conn)
    assert recorded["total"] == 2200 and recorded["cancelled"] == 100


async def test_a_busy_single_slot_worker_makes_one_script_call_per_task(
    conn: Conn, settings: Settings
) -> None:
    """Each finished run is reported in the call that claims the next (complete_claim.lua),
    so the seed's pool of one-slot workers pays one round trip per task, not two."""
    tasks = await seed_tasks(conn, settings, count=300)
    calls = await script_calls(conn)
    async with running(conn, settings, {"noop": lambda p, c: 1}, concurrency=1):

        async def drained() -> bool:
            return int(await conn.redis.hget(conn.keys.counts, "completed") or 0) == len(tasks)

        await wait_until(drained, timeout=60, message="all tasks completed")
        spent = await script_calls(conn) - calls
    # One per task, and a few around them: the first claim, the offer when the queue is
    # empty, heartbeats; reporting apart would have cost another 300.
    assert len(tasks) <= spent <= len(tasks) + 30
    await assert_consistent(conn)


async def test_a_single_slot_worker_rides_lost_scripts_and_dropped_connections(
    conn: Conn, settings: Settings
) -> None:
    """Its claims go out on a connection of its own (ScriptConnection, on a standalone
    Redis): a script flush and a killed connection in the middle of a drain cost a reload
    and a reconnect, never a task."""
    tasks = await seed_tasks(conn, settings, count=40)
    ran: list[str] = []

    async def disrupt(payload: Any, ctx: TaskContext) -> None:
        ran.append(ctx.task.id)
        if len(ran) == 10:
            await forget_scripts(conn)
        elif len(ran) == 20:
            await conn.redis.client_kill_filter(_type="normal", skipme=True)

    async with running(conn, settings, {"noop": disrupt}, concurrency=1):

        async def drained() -> bool:
            return int(await conn.redis.hget(conn.keys.counts, "completed") or 0) == len(tasks)

        await wait_until(drained, timeout=60, message="all tasks completed")
    assert sorted(set(ran)) == sorted(t.id for t in tasks)
    await assert_consistent(conn)


async def _offered(conn: Conn, owner: str, slots: int) -> bool:
    return await conn.redis.lrange(conn.keys.idle("work"), 0, -1) == [owner] * slots


async def test_idle_consumer_is_handed_tasks_and_offers_its_slots_again(
    conn: Conn, settings: Settings
) -> None:
    starts: list[float] = []

    async def record(payload: Any, ctx: TaskContext) -> int:
        starts.append(time.time())
        return int(payload["n"])

    # 32 slots: a claim then waits for 2 free ones (claim_batch) or CLAIM_GATHER_SECONDS.
    async with running(conn, settings, {"noop": record}, concurrency=32) as consumer:
        assert consumer.claim_batch == 2
        me = consumer.instance_id
        await wait_until(lambda: _offered(conn, me, 32), message="every slot on offer")
        sent = time.time()
        [task] = await seed_tasks(conn, settings, payload={"n": 5})
        await wait_until(status_is(conn, task.id, "completed"), message="hand-over run")
        # The freed slot is offered again within a claim gather, long before the inbox's
        # 1 s silence would re-sync the offers (a slot left unoffered idles meanwhile).
        await wait_until(lambda: _offered(conn, me, 32), timeout=0.5, message="offers renewed")
    record_ = await queries.get_task(conn, task.id)
    assert record_.result == 5 and starts and starts[0] >= sent
    details = await queries.get_details(conn, task.id)
    assert [e.event for e in details.events] == ["task.created", "task.claimed", "task.completed"]
    # Stopped: no offer, no inbox left behind.
    assert await conn.redis.llen(conn.keys.idle("work")) == 0
    assert not await conn.redis.exists(conn.keys.inbox(me), conn.keys.offers("work"))
    await assert_consistent(conn)


async def test_a_wide_consumer_at_a_quiet_rate_reports_with_its_re_offer(
    conn: Conn, settings: Settings
) -> None:
    """Handed one task at a time, a consumer of many slots reports each in the call that
    offers its slot again (complete_claim.lua): two script calls per task, its create and
    that one. It used to report at once and re-offer a claim gather later: three."""
    async with running(conn, settings, {"noop": lambda p, c: 1}, concurrency=32) as consumer:
        me = consumer.instance_id
        await wait_until(lambda: _offered(conn, me, 32), message="every slot on offer")
        calls, lpops = await script_calls(conn), await command_calls(conn, "lpop")
        for _ in range(20):
            [task] = await seed_tasks(conn, settings)
            await wait_until(status_is(conn, task.id, "completed"), message="hand-over run")
            await wait_until(lambda: _offered(conn, me, 32), message="offers renewed")
        spent = await script_calls(conn) - calls
        lpops = await command_calls(conn, "lpop") - lpops
    # 20 creates and 20 reports riding on re-offers, and a few heartbeats around them.
    assert 40 <= spent <= 48, spent
    if conn.use_functions:
        # Each create pops the consumer's offer. The reader's BLMPOP takes a burst with its
        # first task: no LPOP of the inbox after each task (on Redis 6.2, an empty one).
        assert lpops == 20, lpops
    await assert_consistent(conn)


async def test_tasks_handed_over_together_are_popped_together(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis 7 one BLMPOP waits for hand-overs and takes a burst with its first task; on
    6.2 a BLPOP takes the first and an LPOP the rest (at a quiet rate an empty one)."""
    popped: list[int] = []
    wait_for_handovers = Consumer._wait_for_handovers

    async def recording(self: Consumer, inboxes: dict[str, str]) -> Any:
        got = await wait_for_handovers(self, inboxes)
        if got is not None:
            popped.append(len(got[1]))
        return got

    monkeypatch.setattr(Consumer, "_wait_for_handovers", recording)
    async with running(conn, settings, {"noop": lambda p, c: 1}, concurrency=8) as consumer:
        me = consumer.instance_id
        await wait_until(lambda: _offered(conn, me, 8), message="every slot on offer")
        tasks = await seed_tasks(conn, settings, count=5)  # one create hands over all five
        for task in tasks:
            await wait_until(status_is(conn, task.id, "completed"), message="burst run")
    assert popped[0] == (5 if conn.use_functions else 1), popped
    await assert_consistent(conn)


async def test_stopping_consumer_hands_back_tasks_handed_over_but_not_started(
    conn: Conn, settings: Settings
) -> None:
    ran: list[str] = []

    async def record(payload: Any, ctx: TaskContext) -> None:
        ran.append(ctx.task.id)

    consumer = Consumer(
        conn, settings, service="worker", lane="work", name="Worker T", concurrency=2,
        lookup={"noop": record}.get,
    )  # fmt: skip
    # Its offers were made, then tasks handed over, and it is told to stop before it reads.
    await transitions.claim_or_offer(
        conn, "work", 2, worker="Worker T", owner=consumer.instance_id, lease_seconds=30
    )
    handed = await seed_tasks(conn, settings, count=2)
    [extra] = await seed_tasks(conn, settings)  # no offer left: queued
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(consumer.run(stop), 10)
    assert ran == []
    for task in handed:
        back = await queries.get_task(conn, task.id)
        assert back.status == "pending", back
    ready = await conn.redis.lrange(conn.keys.ready("work", extra.priority), 0, -1)
    assert set(ready) == {t.id for t in handed} | {extra.id} and ready[-1] == extra.id
    assert not await conn.redis.exists(conn.keys.inbox(consumer.instance_id))
    await assert_consistent(conn)


async def test_a_task_promoted_ahead_starts_at_its_due_time_not_before(
    conn: Conn, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    started: list[float] = []

    async def record(payload: Any, ctx: TaskContext) -> None:
        started.append(time.time())

    async with running(conn, settings, {"noop": record}, concurrency=1) as consumer:
        await wait_until(lambda: _offered(conn, consumer.instance_id, 1), message="an offer")
        due = datetime.now(UTC) + timedelta(seconds=0.4)
        [task] = await seed_tasks(conn, settings, scheduled_for=due)
        assert await transitions.promote_due(conn, lead_seconds=1.0) == (1, None)
        await wait_until(status_is(conn, task.id, "completed"), message="the scheduled task")
    assert started[0] >= due.timestamp(), (started[0], due.timestamp())
    assert started[0] - due.timestamp() < 0.2
    record = await queries.get_task(conn, task.id)  # 'started' is the due time, not the claim
    assert record.started_at is not None and record.scheduled_for is not None
    assert record.started_at == record.scheduled_for


async def test_a_handler_that_swallows_its_cancellation_does_not_hold_the_stop(
    conn: Conn, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()

    async def stubborn(payload: Any, ctx: TaskContext) -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # a misbehaving handler
                await asyncio.sleep(10)

    [task] = await seed_tasks(conn, settings)
    consumer = Consumer(
        conn, settings, service="worker", lane="work", name="Worker T", concurrency=2,
        lookup={"noop": stubborn}.get,
    )  # fmt: skip
    stop = asyncio.Event()
    job = asyncio.create_task(consumer.run(stop))
    try:
        await wait_until(status_is(conn, task.id, "processing"), message="the task to start")
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(job, 10)
        # SHUTDOWN_GRACE (1 s here), then at most a second for the cancelled run to end.
        assert time.monotonic() - started < 4
    finally:
        release.set()
    assert "ignored its cancellation" in caplog.text
    handed_back = await queries.get_task(conn, task.id)
    assert handed_back.status == "pending" and handed_back.retry_count == 0
    await assert_consistent(conn)


async def test_a_consumer_whose_sealed_inbox_is_taken_back_still_stops(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # Recovery judged it late and took its inbox back, seal included, before its reader
    # read the seal: as if the seal had never been pushed.
    withdraw = heartbeats.withdraw_offers

    async def seal_taken_back(conn: Conn, instance_id: str, **kw: Any) -> None:
        await withdraw(conn, instance_id)

    async with running(conn, settings, {}, concurrency=1) as consumer:
        await wait_until(lambda: _offered(conn, consumer.instance_id, 1), message="an offer")
        await asyncio.sleep(0.05)  # let its reader block on the inbox
        monkeypatch.setattr(heartbeats, "withdraw_offers", seal_taken_back)
    # running() waited for the stop: the reader ended after one silent inbox wait, and was
    # not left to time out and be cancelled (that logs "its inbox reader did not stop").
    # No bound on the time: a loaded CI box made one silent wait take 1.95 s.
    assert "did not stop" not in caplog.text


async def test_an_unencodable_error_text_fails_its_own_task_and_blocks_no_other(
    conn: Conn, settings: Settings
) -> None:
    """A lone surrogate in an exception message (or an SMTP reply decoded with
    surrogateescape) cannot be encoded for Redis: it once made every report of its batch
    fail for ever while the heartbeat kept the leases alive."""

    async def outcome(payload: Any, ctx: TaskContext) -> Any:
        if payload["n"] == 0:
            raise ValueError("reply was \udcff\udcfe")
        if payload["n"] == 1:
            return {"smtp_reply": "2.0.0 queued as \udcff"}  # the work is done: keep it
        return payload["n"]

    bad = await seed_tasks(conn, settings, payload={"n": 0}, max_retries=0)
    sent = await seed_tasks(conn, settings, payload={"n": 1})
    good = [(await seed_tasks(conn, settings, payload={"n": n}))[0] for n in range(2, 7)]
    async with running(conn, settings, {"noop": outcome}, concurrency=8):
        for task in good + sent:
            await wait_until(status_is(conn, task.id, "completed"), message=f"task {task.id}")
        await wait_until(status_is(conn, bad[0].id, "failed"), message="the bad task")
    assert (await queries.get_task(conn, bad[0].id)).error == "ValueError: reply was \ufffd\ufffd"
    stored = (await queries.get_task(conn, sent[0].id)).result
    assert stored == {"smtp_reply": "2.0.0 queued as \ufffd"}
    await assert_consistent(conn)


async def test_an_outcome_that_cannot_be_stored_fails_alone_instead_of_retrying_for_ever(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only "Redis unavailable" is worth retrying: any other error of a report concerns its
    outcomes, so the batch is split and the one that cannot be stored fails its task."""
    from shared import codec

    monkeypatch.setattr(codec, "safe_text", lambda text: text)  # a path that forgot to clean
    gate = asyncio.Event()

    async def outcome(payload: Any, ctx: TaskContext) -> Any:
        await gate.wait()  # finish together, so the outcomes share one report
        if payload["n"] == 0:
            raise ValueError("\udcff")
        return payload["n"]

    tasks = [
        (await seed_tasks(conn, settings, payload={"n": n}, max_retries=0))[0] for n in range(4)
    ]
    async with running(conn, settings, {"noop": outcome}, concurrency=4) as consumer:
        await wait_until(lambda: len(consumer.running) == 4, message="all four running")
        gate.set()
        for task in tasks[1:]:
            await wait_until(status_is(conn, task.id, "completed"), message=f"task {task.id}")
        await wait_until(status_is(conn, tasks[0].id, "failed"), message="unstorable outcome")
    error = (await queries.get_task(conn, tasks[0].id)).error or ""
    assert error.startswith("the outcome of this run could not be stored: UnicodeEncodeError")
    await assert_consistent(conn)


async def test_a_task_handed_back_to_the_consumer_still_running_it_settles_each_run(
    conn: Conn, settings: Settings
) -> None:
    """A live worker wrongly declared dead (an event-loop stall longer than
    DEAD_AFTER_SECONDS) gets its own task back while the first run goes on. The first
    run's report is stale and must not drop the second run's: the task completes once the
    second run ends, long before its lease (300 s here) would have to recover it."""
    long_lease = settings.model_copy(update={"task_lease_seconds": 300})
    runs: list[asyncio.Event] = []

    async def gated(payload: Any, ctx: TaskContext) -> int:
        gate = asyncio.Event()
        runs.append(gate)
        await gate.wait()
        return ctx.attempt

    [task] = await seed_tasks(conn, long_lease)
    async with running(conn, long_lease, {"noop": gated}) as consumer:
        await wait_until(lambda: len(runs) == 1, message="first run")
        # What recovery does to a consumer it believes dead: its task goes back to the queue,
        # and this very consumer (the only one) claims it again.
        reply = await transitions.fail(
            conn, task.id, None, "worker lost", long_lease, mode=f"lost:{consumer.instance_id}"
        )
        assert reply == ["recovered"]
        await wait_until(lambda: len(runs) == 2, message="second run")
        runs[0].set()  # the first run ends: its outcome is stale
        await wait_until(lambda: len(consumer.running) == 1, message="first run settled")
        runs[1].set()
        await wait_until(status_is(conn, task.id, "completed"), timeout=5, message="completion")
    done = await queries.get_task(conn, task.id)
    assert done.result == 2 and len(runs) == 2
    await assert_consistent(conn)
