"""The scheduler's loops against a real Redis: promotion on time, recovery, retention."""

from __future__ import annotations

import asyncio
import statistics
from datetime import UTC, datetime, timedelta

from services.scheduler.promote import promote_loop
from services.scheduler.recover import recover_once
from services.scheduler.retention import purge_once
from shared import codec, heartbeats, queries, transitions
from shared.redis import Conn
from shared.settings import Settings
from tests.support.pubsub import wait_subscribed
from tests.support.seed import assert_consistent, seed_tasks
from tests.support.waiting import wait_until


async def test_scheduled_tasks_become_pending_on_time_never_early(
    conn: Conn, settings: Settings
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(promote_loop(conn, stop))
    start = datetime.now(UTC)
    due_times = [start + timedelta(milliseconds=300 + 40 * i) for i in range(20)]
    tasks = []
    for due in due_times:
        tasks += await seed_tasks(conn, settings, scheduled_for=due)
    lateness = []
    for task, due in zip(tasks, due_times, strict=True):
        await wait_until(
            lambda t=task: _pending(conn, t.id), timeout=5, interval=0.002, message="promotion"
        )
        details = await queries.get_details(conn, task.id)
        promoted = next(e.at for e in details.events if e.event == "task.pending")
        assert promoted >= due, "promoted before its time"
        lateness.append((promoted - due).total_seconds() * 1000)
    stop.set()
    await loop
    assert statistics.median(lateness) < 50, lateness
    await assert_consistent(conn)


async def _pending(conn: Conn, task_id: str) -> bool:
    return (await queries.get_task(conn, task_id)).status == "pending"


async def test_an_earlier_schedule_wakes_a_sleeping_scheduler(
    conn: Conn, settings: Settings
) -> None:
    await seed_tasks(conn, settings, scheduled_for=datetime.now(UTC) + timedelta(hours=1))
    stop = asyncio.Event()
    loop = asyncio.create_task(promote_loop(conn, stop))
    # Its wake-up subscription is live, so the earlier task below cuts its sleep short.
    await wait_subscribed(conn, conn.keys.scheduler_wake)
    [soon] = await seed_tasks(
        conn, settings, scheduled_for=datetime.now(UTC) + timedelta(milliseconds=100)
    )
    await wait_until(lambda: _pending(conn, soon.id), timeout=2, message="wake-up on earlier task")
    stop.set()
    await loop


async def test_dead_worker_tasks_are_recovered_by_missing_heartbeat(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    await heartbeats.beat(conn, "worker", "worker-dead-1", {}, 10)
    await transitions.claim(conn, "work", 1, worker="W", owner="worker-dead-1", lease_seconds=300)
    assert await recover_once(conn, settings) == 0  # its heartbeat is still fresh
    await conn.redis.zadd(conn.keys.heartbeats("worker"), {"worker-dead-1": codec.now_ms() - 5000})
    assert await recover_once(conn, settings) == 1
    recovered = await queries.get_task(conn, task.id)
    assert recovered.status == "pending" and "worker lost" in (recovered.error or "")
    assert await conn.redis.zscore(conn.keys.heartbeats("worker"), "worker-dead-1") is None
    await assert_consistent(conn)


async def test_expired_lease_is_recovered(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    await transitions.claim(conn, "work", 1, worker="W", owner="never-beat", lease_seconds=0.01)
    await wait_until(lambda: recover_once(conn, settings), timeout=2, message="lease recovery")
    assert (await queries.get_task(conn, task.id)).status == "pending"


async def test_retention_purges_and_counts_stay_exact(conn: Conn, settings: Settings) -> None:
    short = settings.model_copy(update={"result_ttl_seconds": 1})
    tasks = await seed_tasks(conn, short, count=5)
    for task in tasks:
        await transitions.cancel(conn, task.id, short)
    await seed_tasks(conn, short, count=2)
    purged = 0

    async def all_purged() -> bool:
        nonlocal purged
        purged += await purge_once(conn)
        return purged == 5

    await wait_until(all_purged, timeout=3, message="purge of the 5 cancelled tasks")
    recorded = await assert_consistent(conn)
    assert recorded == {"total": 2, "pending": 2}


async def test_two_schedulers_promote_each_task_once(conn: Conn, settings: Settings) -> None:
    due = datetime.now(UTC) + timedelta(milliseconds=200)
    tasks = await seed_tasks(conn, settings, count=300, scheduled_for=due)
    stop = asyncio.Event()
    loops = [asyncio.create_task(promote_loop(conn, stop)) for _ in range(2)]

    async def all_pending() -> bool:
        return int(await conn.redis.hget(conn.keys.counts, "pending") or 0) == 300

    await wait_until(all_pending, timeout=5, message="all promoted")
    stop.set()
    await asyncio.gather(*loops)
    ready = await conn.redis.lrange(conn.keys.ready("work", 3), 0, -1)
    assert sorted(ready) == sorted(t.id for t in tasks)
    await assert_consistent(conn)
