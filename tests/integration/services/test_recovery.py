"""Fast recovery by heartbeat, and never at the expense of a live consumer (issue 7, item 2)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import pytest

from services.scheduler.recover import Recoverer
from services.scheduler.runner import run_scheduler
from shared import codec, heartbeats, queries, transitions
from shared.redis import Conn, create_redis
from shared.registry import TaskContext
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.redis_server import free_port
from tests.support.seed import assert_consistent, seed_tasks
from tests.support.waiting import wait_until


async def test_slow_but_alive_worker_keeps_its_task_past_the_lease(
    conn: Conn, settings: Settings
) -> None:
    short = settings.model_copy(update={"task_lease_seconds": 0.5})

    async def slow(payload: Any, ctx: TaskContext) -> str:
        await asyncio.sleep(2.5)  # five leases long
        return "done"

    [task] = await seed_tasks(conn, short)
    stop = asyncio.Event()
    scheduler = asyncio.create_task(run_scheduler(conn, short, stop))
    async with running(conn, short, {"noop": slow}):
        await wait_until(status_is(conn, task.id, "completed"), timeout=10, message="completion")
    stop.set()
    await scheduler
    details = await queries.get_details(conn, task.id)
    assert [a.outcome for a in details.attempts] == ["completed"]
    assert not [e for e in details.events if e.event == "task.recovered"]


async def test_dead_consumer_task_is_back_within_dead_after_plus_a_pass(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    await heartbeats.beat(conn, "worker", "worker-gone", {}, 5)
    last_beat = time.monotonic()
    await transitions.claim(conn, "work", 1, worker="W", owner="worker-gone", lease_seconds=300)
    stop = asyncio.Event()
    scheduler = asyncio.create_task(run_scheduler(conn, settings, stop))
    await wait_until(status_is(conn, task.id, "pending"), timeout=5, message="recovery")
    took = time.monotonic() - last_beat
    stop.set()
    await scheduler
    assert settings.dead_after_seconds <= took < settings.dead_after_seconds + 1.0, took
    recovered = await queries.get_task(conn, task.id)
    assert recovered.retry_count == 0 and "stopped sending heartbeats" in (recovered.error or "")
    await assert_consistent(conn)


async def test_after_an_outage_recovery_waits_for_live_consumers_to_beat(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    await transitions.claim(conn, "work", 1, worker="W", owner="worker-alive", lease_seconds=300)
    # Redis was away: the live worker's last beat is older than DEAD_AFTER.
    stale = codec.now_ms() - int(settings.dead_after_seconds * 1000) - 1000
    await conn.redis.zadd(conn.keys.heartbeats("worker"), {"worker-alive": stale})
    unreachable = create_redis(make_settings(f"redis://127.0.0.1:{free_port()}/0"))
    recoverer = Recoverer(unreachable, settings)
    with pytest.raises(Exception, match="redis unavailable"):
        await recoverer.tick()
    await unreachable.aclose()
    recoverer.conn = conn  # Redis is back
    assert await recoverer.tick() == 0  # blind: the worker gets DEAD_AFTER to beat again
    await heartbeats.beat(conn, "worker", "worker-alive", {}, 5)
    await asyncio.sleep(0.1)
    assert await recoverer.tick() == 0
    assert (await queries.get_task(conn, task.id)).status == "processing"
    # A consumer that stays silent past the blind window is recovered as usual.
    recoverer.blind_until = 0
    await conn.redis.zadd(conn.keys.heartbeats("worker"), {"worker-alive": stale})
    assert await recoverer.tick() == 1
    assert (await queries.get_task(conn, task.id)).status == "pending"


async def test_a_dead_consumers_offers_are_withdrawn_before_its_tasks_are_recovered(
    conn: Conn, settings: Settings
) -> None:
    """A consumer killed while idle leaves offers behind: recovery takes them back, so the
    tasks it recovers (and later ones) are not handed to the dead consumer again."""
    await heartbeats.beat(conn, "worker", "worker-gone", {}, 5)
    await transitions.claim_or_offer(
        conn, "work", 3, worker="W", owner="worker-gone", lease_seconds=300
    )
    [handed] = await seed_tasks(conn, settings)  # handed to the consumer about to die
    assert (await queries.get_task(conn, handed.id)).status == "processing"
    stale = codec.now_ms() - int(settings.dead_after_seconds * 1000) - 1000
    await conn.redis.zadd(conn.keys.heartbeats("worker"), {"worker-gone": stale})
    assert await Recoverer(conn, settings).tick() == 1
    assert (await queries.get_task(conn, handed.id)).status == "pending"
    assert await conn.redis.llen(conn.keys.idle("work")) == 0
    assert not await conn.redis.exists(conn.keys.inbox("worker-gone"))
    [later] = await seed_tasks(conn, settings)
    assert (await queries.get_task(conn, later.id)).status == "pending"
    await assert_consistent(conn)


async def test_a_consumer_two_beats_late_gets_no_more_hand_overs_and_gives_back_unread(
    conn: Conn, settings: Settings
) -> None:
    await transitions.claim_or_offer(conn, "work", 2, worker="W", owner="late", lease_seconds=300)
    [held] = await seed_tasks(conn, settings)  # handed over while it was fine
    late = codec.now_ms() - int(2.5 * settings.heartbeat_seconds * 1000)
    assert 2 * settings.heartbeat_seconds * 1000 < codec.now_ms() - late
    assert codec.now_ms() - late < settings.dead_after_seconds * 1000
    await conn.redis.zadd(conn.keys.heartbeats("worker"), {"late": late})
    assert await Recoverer(conn, settings).tick() == 1  # the one it never read
    assert await conn.redis.llen(conn.keys.idle("work")) == 0  # and no offer left
    back = await queries.get_task(conn, held.id)
    assert back.status == "pending" and back.retry_count == 0 and "did not read" in back.error
    assert not await conn.redis.exists(conn.keys.inbox("late"))
    [later] = await seed_tasks(conn, settings)
    assert (await queries.get_task(conn, later.id)).status == "pending"  # queued, not handed
    await assert_consistent(conn)


async def test_a_late_consumer_keeps_the_tasks_it_started(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    await transitions.claim(conn, "work", 1, worker="W", owner="slow", lease_seconds=300)
    late = codec.now_ms() - int(2.5 * settings.heartbeat_seconds * 1000)
    await conn.redis.zadd(conn.keys.heartbeats("worker"), {"slow": late})
    assert await Recoverer(conn, settings).tick() == 0
    assert (await queries.get_task(conn, task.id)).status == "processing"


async def test_a_worker_whose_clock_is_seconds_behind_keeps_its_task(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats and lease deadlines are stamped and judged with Redis's clock, so a worker
    host 4 s behind the scheduler's (DEAD_AFTER_SECONDS is 1 s here) is not declared dead
    every pass, and its task runs once."""
    skew_ms: contextvars.ContextVar[int] = contextvars.ContextVar("skew_ms", default=0)
    host_clock = codec.now_ms
    monkeypatch.setattr(codec, "now_ms", lambda: host_clock() + skew_ms.get())

    async def slow(payload: Any, ctx: TaskContext) -> str:
        await asyncio.sleep(3 * settings.dead_after_seconds)  # outlives a dead worker
        return "done"

    [task] = await seed_tasks(conn, settings)
    worker_conn = create_redis(settings)
    await worker_conn.load_scripts()
    stop = asyncio.Event()
    scheduler = asyncio.create_task(run_scheduler(conn, settings, stop))
    behind = skew_ms.set(-4000)  # the worker's tasks copy this context: their host's clock
    try:
        async with running(worker_conn, settings, {"noop": slow}):
            skew_ms.reset(behind)
            await wait_until(status_is(conn, task.id, "completed"), timeout=10, message="done")
    finally:
        stop.set()
        await scheduler
        await worker_conn.aclose()
    details = await queries.get_details(conn, task.id)
    assert [a.outcome for a in details.attempts] == ["completed"]
    assert not [e for e in details.events if e.event == "task.recovered"]
