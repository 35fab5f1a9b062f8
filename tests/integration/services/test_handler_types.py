"""A worker never claims a task type it has no handler for (SPEC section 9): the task waits,
counted as ready, for a worker that has one, and the queue view names it as unhandled."""

from __future__ import annotations

from typing import Any

from shared import queries, queue_views, transitions
from shared.redis import Conn
from shared.registry import TaskContext, TaskType, register
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import assert_consistent, create, ensure_test_types
from tests.support.waiting import wait_until


def ensure_types() -> None:
    ensure_test_types()
    register(TaskType("gpu", description="needs a worker with a GPU handler"))


async def enqueue(
    conn: Conn, settings: Settings, task_type: str, n: int, **fields: Any
) -> list[str]:
    ensure_types()
    tasks, _ = await transitions.enqueue(
        conn, [create(type=task_type, **fields) for _ in range(n)], settings
    )
    return [task.id for task in tasks]


async def noop(payload: Any, ctx: TaskContext) -> str:
    return "noop"


async def gpu(payload: Any, ctx: TaskContext) -> str:
    return f"gpu by {ctx.task.id[:4]}"


async def claimed_events(conn: Conn, task_id: str) -> list[str]:
    details = await queries.get_details(conn, task_id)
    return [str(event.worker) for event in details.events if event.event == "task.claimed"]


async def test_a_worker_without_the_handler_never_takes_the_type(
    conn: Conn, settings: Settings
) -> None:
    ensure_types()
    gpu_ids = await enqueue(conn, settings, "gpu", 3)
    noop_ids = await enqueue(conn, settings, "noop", 3)
    async with running(conn, settings, {"noop": noop}):
        for task_id in noop_ids:
            await wait_until(status_is(conn, task_id, "completed"), message="noop done")
        for task_id in gpu_ids:
            task = await queries.get_task(conn, task_id)
            assert task.status == "pending" and task.retry_count == 0
            assert await claimed_events(conn, task_id) == []
        stats = await queries.get_stats(conn, dead_after_seconds=30)
        assert stats.ready_count == 3 and stats.pending_count == 3
        assert stats.parked_by_type == {"gpu": 3}
        [view] = await queue_views.views(conn, dead_after_seconds=30, names=["default"])
        assert view.workers == 1 and view.ready_count == 3
        assert view.unhandled_by_type == {"gpu": 3}
        await assert_consistent(conn)

        # A worker that has the handler takes them, in their order, while the first runs on.
        async with running(conn, settings, {"gpu": gpu}, concurrency=1):
            for task_id in gpu_ids:
                await wait_until(status_is(conn, task_id, "completed"), message="gpu done")
        for task_id in gpu_ids:
            assert await claimed_events(conn, task_id) == ["Worker T"]
        started = [(await queries.get_task(conn, task_id)).started_at for task_id in gpu_ids]
        assert started == sorted(started)
    stats = await queries.get_stats(conn, dead_after_seconds=30)
    assert stats.ready_count == 0 and stats.parked_by_type == {}
    assert await conn.redis.exists(conn.keys.parked_lists) == 0
    await assert_consistent(conn)


async def test_a_hand_over_goes_only_to_a_worker_that_runs_the_type(
    conn: Conn, settings: Settings
) -> None:
    """Both workers sit idle with their slots on offer; each new task starts in the one that
    has its handler, whichever offered first."""
    ensure_types()
    async with (
        running(conn, settings, {"noop": noop}, concurrency=2, name="Plain") as plain,
        running(conn, settings, {"gpu": gpu}, concurrency=2, name="GPU") as gpus,
    ):
        for consumer in (plain, gpus):
            await wait_until(lambda c=consumer: c.offers.get("default"), message="offers")
        for _ in range(3):
            [g] = await enqueue(conn, settings, "gpu", 1)
            [n] = await enqueue(conn, settings, "noop", 1)
            await wait_until(status_is(conn, g, "completed"), message="gpu done")
            await wait_until(status_is(conn, n, "completed"), message="noop done")
            assert await claimed_events(conn, g) == ["GPU"]
            assert await claimed_events(conn, n) == ["Plain"]
        stats = await queries.get_stats(conn, dead_after_seconds=30)
        assert stats.parked_by_type == {}
        await assert_consistent(conn)


async def test_a_parked_task_keeps_its_priority_and_can_be_cancelled(
    conn: Conn, settings: Settings
) -> None:
    ensure_types()
    [urgent] = await enqueue(conn, settings, "gpu", 1, priority=5)
    [doomed] = await enqueue(conn, settings, "gpu", 1, priority=5)
    [low] = await enqueue(conn, settings, "gpu", 1, priority=1)
    async with running(conn, settings, {"noop": noop}) as plain:
        await wait_until(lambda: _parked(conn, 3), message="the gpu tasks parked")
        assert plain.running == {}
    await transitions.cancel(conn, doomed, settings)
    stats = await queries.get_stats(conn, dead_after_seconds=30)
    assert stats.ready_count == 2 and stats.parked_by_type == {"gpu": 2}
    assert stats.queue_depth_by_priority["5"] == 1 and stats.queue_depth_by_priority["1"] == 1
    await assert_consistent(conn)
    # A task of the same priority made ready since runs after the parked one (which was ahead
    # of it), and before the parked one of a lower priority.
    [later] = await enqueue(conn, settings, "gpu", 1, priority=5)
    order: list[str] = []

    async def record(payload: Any, ctx: TaskContext) -> None:
        order.append(ctx.task.id)

    async with running(conn, settings, {"gpu": record}, concurrency=1):
        await wait_until(status_is(conn, low, "completed"), message="all done")
    assert order == [urgent, later, low]
    assert (await queries.get_task(conn, doomed)).status == "cancelled"
    await assert_consistent(conn)


async def _parked(conn: Conn, n: int) -> bool:
    stats = await queries.get_stats(conn, dead_after_seconds=30)
    return stats.parked_by_type.get("gpu", 0) == n


async def test_many_workers_without_the_handler_leave_the_type_alone(
    conn: Conn, settings: Settings
) -> None:
    """Three plain workers drain 200 tasks around 20 they cannot run; none of those is ever
    claimed, and the counts stay exact."""
    ensure_types()
    ids = []
    for i in range(10):
        ids += await enqueue(conn, settings, "noop", 20)
        ids += await enqueue(conn, settings, "gpu", 2, priority=1 + i % 5)
    async with (
        running(conn, settings, {"noop": noop}, concurrency=4),
        running(conn, settings, {"noop": noop}, concurrency=4),
        running(conn, settings, {"noop": noop}, concurrency=1),
    ):

        async def drained() -> bool:
            stats = await queries.get_stats(conn, dead_after_seconds=30)
            return stats.completed_count == 200 and stats.processing_count == 0

        await wait_until(drained, message="noop drained")
        # Claims with free slots look through every ready list: the gpu tasks end up parked.
        await wait_until(lambda: _parked(conn, 20), message="gpu tasks parked")
    stats = await queries.get_stats(conn, dead_after_seconds=30)
    assert stats.pending_count == stats.ready_count == 20
    for task_id in ids:
        if (await queries.get_task(conn, task_id)).type == "gpu":
            assert await claimed_events(conn, task_id) == []
    await assert_consistent(conn)
