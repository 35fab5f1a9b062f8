"""Recurring schedules on a real Redis (SPEC section 12): one task per tick whatever the
number of schedulers and crashes, missed ticks once after downtime. Also on the 6-node Redis
Cluster (CLUSTER_SUITES), where the schedules' slot and the tasks' queue are on different
primaries. The clock is injected wherever a test does not need real time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.scheduler.schedules import schedule_loop
from shared import codec, events, keys, queries, schedules
from shared.keys import Keys
from shared.redis import Conn, create_redis
from shared.schedules import ScheduleBody
from shared.settings import Settings
from tests.support.seed import assert_consistent, ensure_test_types

T0 = 1_900_000_000_000  # an injected "now" (2030), well clear of the real clock


def queue_for(conn: Conn) -> str:
    """A queue whose slot is on another primary than the schedules' (on a cluster)."""
    if conn.topology != "cluster":
        return "sched"
    home = conn.redis.get_node_from_key(keys.SCHEDULES_DUE)
    return next(
        name
        for name in (f"sched{i}" for i in range(200))
        if conn.redis.get_node_from_key(Keys(name).counts) != home
    )


def body(queue: str, **rule: object) -> ScheduleBody:
    return ScheduleBody.model_validate(
        {"task": {"type": "noop", "payload": {"n": 1}, "queue": queue}, **rule}
    )


async def make(
    conn: Conn, settings: Settings, count: int, queue: str, now: int = T0, **rule: object
) -> list[str]:
    ensure_test_types()
    names = [f"s{i:03d}" for i in range(count)]
    for name in names:
        await schedules.put(
            conn, name, body(queue, **(rule or {"interval_seconds": 1})), settings, now_ms=now
        )
    return names


async def tasks_by_schedule(conn: Conn, queue: str) -> Counter[str]:
    ids = await conn.redis.zrange(conn.queue(queue).index_all, 0, -1)
    found = await queries.get_tasks(conn, ids, queue=queue)
    assert all(task.schedule for task in found)
    return Counter(str(task.schedule) for task in found)


@pytest.fixture
async def conns(settings: Settings, conn: Conn) -> AsyncIterator[list[Conn]]:
    """Three more clients: one per scheduler process in the tests below."""
    made = [create_redis(settings) for _ in range(3)]
    for other in made:
        await other.load_scripts()
    yield made
    for other in made:
        await other.aclose()


@pytest.mark.parametrize("schedulers", [2, 3])
async def test_several_schedulers_fire_each_tick_once(
    conn: Conn, settings: Settings, conns: list[Conn], schedulers: int
) -> None:
    queue = queue_for(conn)
    names = await make(conn, settings, 50, queue)
    for tick in range(1, 5):
        now = T0 + tick * 1000 + 3  # each tick, a few ms late
        results = await asyncio.gather(
            *(schedules.fire_due(c, now_ms=now) for c in conns[:schedulers])
        )
        assert sum(r.created for r in results) == 50, results  # one task per schedule
        assert sum(r.fired for r in results) == 50  # one advance per schedule
        assert await tasks_by_schedule(conn, queue) == Counter({name: tick for name in names})
    listed = await schedules.list_all(conn)
    assert {s.next_run_at for s in listed} == {codec.from_ms(T0 + 5000)}
    assert len({s.last_task_id for s in listed}) == 50
    await assert_consistent(conn, queue=queue)


@pytest.mark.parametrize("loops", [2, 3])
async def test_scheduler_loops_on_the_real_clock_fire_each_tick_once(
    conn: Conn, settings: Settings, conns: list[Conn], loops: int
) -> None:
    queue = queue_for(conn)
    names = await make(conn, settings, 50, queue, now=codec.now_ms())
    first = {s.name: s.next_run_at for s in await schedules.list_all(conn)}
    stop = asyncio.Event()
    running = [asyncio.create_task(schedule_loop(c, stop, settings)) for c in conns[:loops]]
    await asyncio.sleep(2.6)
    stop.set()
    await asyncio.gather(*running)
    found = await tasks_by_schedule(conn, queue)
    for schedule in await schedules.list_all(conn):
        assert schedule.next_run_at is not None and first[schedule.name] is not None
        ticks = (schedule.next_run_at - first[schedule.name]).total_seconds()
        assert found[schedule.name] == round(ticks) >= 2, (schedule.name, found)
    assert set(found) == set(names)


async def test_a_scheduler_stopped_between_create_and_advance_leaves_one_task(
    conn: Conn, settings: Settings, conns: list[Conn]
) -> None:
    queue = queue_for(conn)
    names = await make(conn, settings, 20, queue)

    async def crash() -> None:
        raise asyncio.CancelledError  # the process dies here: tasks made, nothing advanced

    with pytest.raises(asyncio.CancelledError):
        await schedules.fire_due(conns[0], now_ms=T0 + 1000, after_create=crash)
    made = await tasks_by_schedule(conn, queue)
    assert made == Counter(dict.fromkeys(names, 1))
    assert {s.next_run_at for s in await schedules.list_all(conn)} == {codec.from_ms(T0 + 1000)}
    # The next scheduler sends the same ticks again: the same tasks come back, then it advances.
    again = await schedules.fire_due(conns[1], now_ms=T0 + 1050)
    assert (again.created, again.fired) == (0, 20)
    assert await tasks_by_schedule(conn, queue) == made
    ids = set(await conn.redis.zrange(conn.queue(queue).index_all, 0, -1))
    assert {s.last_task_id for s in await schedules.list_all(conn)} == ids
    assert {s.next_run_at for s in await schedules.list_all(conn)} == {codec.from_ms(T0 + 2000)}


CRASHING_SCHEDULER = """
import asyncio, os, signal, sys
from shared import schedules
from shared.redis import connect
from tests.conftest import make_settings

async def main():
    async with connect(make_settings(sys.argv[1])) as conn:
        async def die():
            os.kill(os.getpid(), signal.SIGKILL)
        await schedules.fire_due(conn, now_ms=int(sys.argv[2]), after_create=die)

asyncio.run(main())
"""


async def test_a_scheduler_sigkilled_between_create_and_advance_leaves_one_task(
    conn: Conn, settings: Settings
) -> None:
    queue = queue_for(conn)
    names = await make(conn, settings, 10, queue)
    killed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CRASHING_SCHEDULER, settings.redis_url, str(T0 + 1000)],
        cwd=os.getcwd(),
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    assert await tasks_by_schedule(conn, queue) == Counter(dict.fromkeys(names, 1))
    result = await schedules.fire_due(conn, now_ms=T0 + 1200)
    assert (result.created, result.fired) == (0, 10)
    assert await tasks_by_schedule(conn, queue) == Counter(dict.fromkeys(names, 1))
    await schedules.fire_due(conn, now_ms=T0 + 2000)
    assert await tasks_by_schedule(conn, queue) == Counter(dict.fromkeys(names, 2))


async def test_ticks_missed_while_no_scheduler_ran_fire_once(
    conn: Conn, settings: Settings
) -> None:
    queue = queue_for(conn)
    [every_second] = await make(conn, settings, 1, queue)
    await schedules.put(conn, "minutely", body(queue, cron="* * * * *"), settings, now_ms=T0)
    # Down for 10 minutes: ten minutely ticks and 600 one-second ticks were missed.
    result = await schedules.fire_due(conn, now_ms=T0 + 600_500)
    assert (result.created, result.fired) == (2, 2)
    assert await tasks_by_schedule(conn, queue) == Counter({every_second: 1, "minutely": 1})
    one = await schedules.get(conn, every_second)
    assert one.next_run_at == codec.from_ms(T0 + 601_000)  # on from now, on its grid
    minutely = await schedules.get(conn, "minutely")
    assert minutely.next_run_at is not None
    assert codec.to_ms(minutely.next_run_at) > T0 + 600_500
    assert codec.to_ms(minutely.next_run_at) % 60_000 == 0
    again = await schedules.fire_due(conn, now_ms=T0 + 600_600)
    assert again.created == 0 and again.next_due_ms == T0 + 601_000


async def test_pause_resume_trigger_delete(conn: Conn, settings: Settings) -> None:
    queue = queue_for(conn)
    [name] = await make(conn, settings, 1, queue)
    paused = await schedules.pause(conn, name)
    assert paused.paused and paused.next_run_at is None
    assert (await schedules.fire_due(conn, now_ms=T0 + 5000)).created == 0
    task = await schedules.trigger(conn, name)  # a paused schedule can still be triggered
    assert task.schedule == name and task.queue == queue
    assert (await schedules.get(conn, name)).last_task_id == task.id
    resumed = await schedules.resume(conn, name, now_ms=T0 + 9000)
    assert resumed.next_run_at == codec.from_ms(T0 + 10_000)  # paused ticks do not fire
    assert (await schedules.fire_due(conn, now_ms=T0 + 10_000)).created == 1
    gone = await schedules.delete(conn, name)
    assert gone.name == name
    assert await schedules.list_all(conn) == []
    assert await conn.redis.zcard(keys.SCHEDULES_DUE) == 0
    assert (await schedules.fire_due(conn, now_ms=T0 + 20_000)).created == 0
    assert await tasks_by_schedule(conn, queue) == Counter({name: 2})


async def test_a_replaced_schedule_fires_on_its_new_rule(conn: Conn, settings: Settings) -> None:
    queue = queue_for(conn)
    [name] = await make(conn, settings, 1, queue)
    _, created = await schedules.put(
        conn, name, body(queue, interval_seconds=60), settings, now_ms=T0 + 500
    )
    assert not created
    assert (await schedules.fire_due(conn, now_ms=T0 + 1000)).created == 0
    assert (await schedules.fire_due(conn, now_ms=T0 + 60_500)).created == 1


async def test_putting_the_same_timing_again_keeps_the_next_tick(
    conn: Conn, settings: Settings
) -> None:
    """A deploy that PUTs an unchanged daily interval every hour must not restart its
    countdown (it would never fire); a new task body alone keeps the tick too."""
    queue = queue_for(conn)
    [name] = await make(conn, settings, 1, queue, interval_seconds=86_400)
    due = codec.from_ms(T0 + 86_400_000)
    assert (await schedules.get(conn, name)).next_run_at == due
    for hours in (1, 2):
        again, created = await schedules.put(
            conn, name, body(queue, interval_seconds=86_400), settings,
            now_ms=T0 + hours * 3_600_000,
        )  # fmt: skip
        assert not created and again.next_run_at == due
    other_task = ScheduleBody.model_validate(
        {"interval_seconds": 86_400, "task": {"type": "noop", "payload": 2, "queue": queue}}
    )
    kept, _ = await schedules.put(conn, name, other_task, settings, now_ms=T0 + 3 * 3_600_000)
    assert kept.next_run_at == due and kept.task["payload"] == 2
    # A new timing starts from the time of the PUT.
    changed, _ = await schedules.put(
        conn, name, body(queue, interval_seconds=60), settings, now_ms=T0 + 3_600_000
    )
    assert changed.next_run_at == codec.from_ms(T0 + 3_660_000)


async def test_a_bad_periodic_declaration_is_logged_and_skipped(
    conn: Conn, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """One typo in a plugin's @periodic must not stop the scheduler: it is named in an
    error log, nothing is written for it, and the valid declarations are upserted."""
    from shared import registry
    from shared.errors import ScheduleNotFound

    ensure_test_types()
    queue = queue_for(conn)
    registry.periodic("it.bad-hour", cron="0 25 * * *", queue=queue)(lambda p, c: None)
    registry.periodic("it.bad-zone", interval_seconds=5, timezone="Mars/Olympus")(lambda p, c: None)
    registry.periodic("it.good", interval_seconds=60, queue=queue)(lambda p, c: None)
    try:
        with caplog.at_level("ERROR", logger="shared.schedules"):
            assert await schedules.declare_periodic(conn, settings) == ["it.good"]
        logged = " ".join(record.getMessage() for record in caplog.records)
        assert "@periodic('it.bad-hour') is not valid" in logged
        assert "@periodic('it.bad-zone') is not valid" in logged and "Mars/Olympus" in logged
        for bad in ("it.bad-hour", "it.bad-zone"):
            with pytest.raises(ScheduleNotFound):
                await schedules.get(conn, bad)
        assert (await schedules.get(conn, "it.good")).interval_seconds == 60
    finally:
        for name in ("it.bad-hour", "it.bad-zone", "it.good"):
            registry._periodic.pop(name, None)
            registry._registry.pop(name, None)


async def test_periodic_declarations_are_upserted_and_keep_their_state(
    conn: Conn, settings: Settings
) -> None:
    from shared import registry

    ensure_test_types()
    queue = queue_for(conn)
    registry.periodic("it.every-minute", interval_seconds=60, queue=queue)(lambda p, c: None)
    try:
        assert "it.every-minute" in await schedules.declare_periodic(conn, settings)
        first = await schedules.get(conn, "it.every-minute")
        assert first.task["type"] == "it.every-minute" and first.task["queue"] == queue
        await schedules.pause(conn, "it.every-minute")
        await schedules.declare_periodic(conn, settings)  # a restart: unchanged, still paused
        again = await schedules.get(conn, "it.every-minute")
        assert again.paused and again.created_at == first.created_at
        registry.periodic("it.every-minute", interval_seconds=5, queue=queue)(lambda p, c: None)
        await schedules.declare_periodic(conn, settings)  # a new definition replaces it
        changed = await schedules.get(conn, "it.every-minute")
        assert changed.interval_seconds == 5 and changed.paused
    finally:
        registry._periodic.pop("it.every-minute", None)
        registry._registry.pop("it.every-minute", None)


async def test_the_fired_event_names_the_schedule_and_its_tick(
    conn: Conn, settings: Settings
) -> None:
    queue = queue_for(conn)
    [name] = await make(conn, settings, 1, queue)
    subscribed = asyncio.Event()
    messages = events.subscribe(conn, keys.EVENTS_CHANNEL, subscribed=subscribed)

    async def first_fired() -> dict[str, Any]:
        async for raw in messages:
            event: dict[str, Any] = codec.loads(raw)
            # On a cluster a classic PUBLISH reaches the other nodes over the cluster bus,
            # so an earlier test's event can arrive late: wait for this tick's.
            if event.get("event") == "schedule.fired" and event.get("tick_ms") == T0 + 1000:
                return event
        raise AssertionError("the subscription ended")

    reader = asyncio.create_task(first_fired())
    try:
        await asyncio.wait_for(subscribed.wait(), 5)
        result = await schedules.fire_due(conn, now_ms=T0 + 1000)
        assert result.created == 1
        fired = await asyncio.wait_for(reader, 5)
    finally:
        reader.cancel()
        await messages.aclose()
    assert fired["schedule"] == name
    assert fired["task_id"] == (await schedules.get(conn, name)).last_task_id
