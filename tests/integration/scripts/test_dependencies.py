"""Task dependencies (SPEC section 11) through the transition scripts on a real Redis: waiting,
release inside complete.lua, the cancel cascade, retention and retries, keys and counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.scheduler.cascade import drain_once
from shared import codec, queries, transitions
from shared.errors import DependencyNotFound, DependencyUnmet, ValidationFailed
from shared.models import Task
from shared.redis import Conn
from shared.settings import Settings
from shared.transitions import Outcome
from tests.support.seed import assert_consistent, counts, create, ensure_test_types, seed_tasks
from tests.support.snapshot import snapshot


async def graph(conn: Conn, settings: Settings, *items: dict[str, Any]) -> list[Task]:
    ensure_test_types()
    tasks, _ = await transitions.enqueue(conn, [create(**item) for item in items], settings)
    return tasks


async def claim_all(conn: Conn, queue: str | None = None) -> list[transitions.Claimed]:
    return await transitions.claim(
        conn, "work", 100, worker="Worker 1", owner="w-1", lease_seconds=30, queue=queue
    )


async def run_ready(conn: Conn, settings: Settings, *, ok: bool = True) -> list[str]:
    """Claim what is ready and report every run at once (report_outcomes' pipelined path);
    returns the ids claimed."""
    claimed = await claim_all(conn)
    outcomes = [
        Outcome(c.task.id, c.token, ok, result={"from": c.task.id}, error="boom", final=not ok)
        for c in claimed
    ]
    await transitions.report_outcomes(conn, outcomes, settings)
    return [c.task.id for c in claimed]


async def status(conn: Conn, task: Task) -> str:
    return (await queries.get_task(conn, task.id)).status


async def test_a_chain_runs_one_link_at_a_time(conn: Conn, settings: Settings) -> None:
    a, b, c = await graph(
        conn,
        settings,
        {"ref": "a"},
        {"ref": "b", "depends_on": ["a"]},
        {"depends_on": ["b"]},
    )
    assert [a.status, b.status, c.status] == ["pending", "waiting", "waiting"]
    assert b.depends_on == [a.id] and c.depends_on == [b.id]
    assert await counts(conn) == {"total": 3, "pending": 1, "waiting": 2}
    stats = await queries.get_stats(conn, dead_after_seconds=1)
    assert stats.waiting_count == 2 and stats.queues["default"].waiting_count == 2
    assert stats.by_status()["waiting"] == 2
    k = conn.keys
    assert await conn.redis.smembers(k.task_dependents(a.id)) == {b.id}
    record = await conn.redis.hgetall(k.task(b.id))
    assert record["depends_on"] == a.id and record["deps_left"] == "1"
    assert await conn.redis.hget(k.task(a.id), "has_dependents") == "1"
    assert await conn.redis.hget(k.task(c.id), "has_dependents") is None
    assert await conn.redis.zrange(k.index_status("waiting"), 0, -1) == sorted([b.id, c.id])
    await assert_consistent(conn)
    assert await run_ready(conn, settings) == [a.id]
    assert [await status(conn, t) for t in (a, b, c)] == ["completed", "pending", "waiting"]
    events = await conn.redis.lrange(k.task_events(b.id), 0, -1)
    assert [codec.loads(e)["event"] for e in events] == ["task.released"]
    await assert_consistent(conn)
    assert await run_ready(conn, settings) == [b.id]
    assert await run_ready(conn, settings) == [c.id]
    assert await counts(conn) == {"total": 3, "completed": 3}
    await assert_consistent(conn)


async def test_a_fan_out_then_a_fan_in(conn: Conn, settings: Settings) -> None:
    root, *leaves, join = await graph(
        conn,
        settings,
        {"ref": "root"},
        *({"ref": f"leaf{i}", "depends_on": ["root"]} for i in range(3)),
        {"depends_on": ["leaf0", "leaf1", "leaf2"]},
    )
    assert await run_ready(conn, settings) == [root.id]
    assert sorted(await run_ready(conn, settings)) == sorted(t.id for t in leaves)
    assert await status(conn, join) == "pending"
    assert await run_ready(conn, settings) == [join.id]
    await assert_consistent(conn)


async def test_complete_releases_through_the_single_call_too(
    conn: Conn, settings: Settings
) -> None:
    a, b = await graph(conn, settings, {"ref": "a"}, {"depends_on": ["a"]})
    [claimed] = await claim_all(conn)
    assert await transitions.complete(conn, a.id, claimed.token, 1, settings) == "ok"
    assert await status(conn, b) == "pending"


async def test_a_dependency_completed_before_counts_as_done(conn: Conn, settings: Settings) -> None:
    [a] = await seed_tasks(conn, settings)
    await run_ready(conn, settings)
    [pending] = await graph(conn, settings, {"depends_on": [a.id]})
    assert pending.status == "pending" and pending.depends_on == [a.id]
    [running] = await seed_tasks(conn, settings)
    claimed = {c.task.id: c for c in await claim_all(conn)}
    assert set(claimed) == {pending.id, running.id}
    [waits] = await graph(conn, settings, {"depends_on": [running.id, a.id]})
    assert waits.status == "waiting"
    assert await conn.redis.hget(conn.keys.task(waits.id), "deps_left") == "1"
    await transitions.complete(conn, running.id, claimed[running.id].token, 2, settings)
    assert await status(conn, waits) == "pending"
    await assert_consistent(conn)


async def test_a_dependency_failed_or_cancelled_before_cancels_at_once(
    conn: Conn, settings: Settings
) -> None:
    [doomed] = await seed_tasks(conn, settings, max_retries=0)
    await run_ready(conn, settings, ok=False)
    [gone] = await seed_tasks(conn, settings)
    await transitions.cancel(conn, gone.id, settings)
    first, second, third = await graph(
        conn,
        settings,
        {"ref": "first", "depends_on": [doomed.id], "unique_key": "u1"},
        {"depends_on": ["first"]},
        {"depends_on": [gone.id]},
    )
    assert (first.status, first.error) == ("cancelled", f"dependency {doomed.id} failed")
    assert (second.status, second.error) == ("cancelled", f"dependency {first.id} was cancelled")
    assert third.error == f"dependency {gone.id} was cancelled"
    for task in (first, second, third):
        stored = await queries.get_task(conn, task.id)
        assert (stored.status, stored.error) == (task.status, task.error)
        assert await conn.redis.zscore(conn.keys.expiry, task.id) is not None
        details = await queries.get_details(conn, task.id)
        assert [e.event for e in details.events] == ["task.created", "task.cancelled"]
        assert details.events[0].status == "cancelled"
    # A cancelled task holds no unique_key: the next create with it goes ahead.
    [again] = await seed_tasks(conn, settings, unique_key="u1")
    assert again.status == "pending"
    await assert_consistent(conn)


async def test_a_released_task_whose_time_has_not_come_is_scheduled(
    conn: Conn, settings: Settings
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    _a, b = await graph(conn, settings, {"ref": "a"}, {"depends_on": ["a"], "scheduled_for": later})
    assert b.status == "waiting"
    await run_ready(conn, settings)
    assert await status(conn, b) == "scheduled"
    assert await conn.redis.zscore(conn.keys.delayed, b.id) is not None
    await assert_consistent(conn)


async def test_unknown_ids_and_ids_of_another_queue_are_404_and_write_nothing(
    conn: Conn, settings: Settings
) -> None:
    [other] = await seed_tasks(conn, settings, queue="other")
    [mine] = await seed_tasks(conn, settings)
    before = await snapshot(conn)
    unknown = "3f1c9d2e-0000-4000-8000-00000000abcd"
    for depends_on in ([unknown], [mine.id, other.id]):
        with pytest.raises(DependencyNotFound) as caught:
            await graph(conn, settings, {"ref": "x"}, {"depends_on": ["x", *depends_on]})
        assert caught.value.task_id == depends_on[-1]
    for items in (
        [{"ref": "a", "depends_on": ["b"]}, {"ref": "b", "depends_on": ["a"]}],
        [{"ref": "a"}, {"ref": "a"}],
        [{"depends_on": ["nope"]}],
        [{"depends_on": ["later"]}, {"ref": "later"}],
    ):
        with pytest.raises(ValidationFailed):
            await graph(conn, settings, *items)
    assert await snapshot(conn) == before


async def three_levels(conn: Conn, settings: Settings) -> tuple[Task, list[Task], Task]:
    """root <- l1 <- l2 <- l3, and `bystander`, which waits on another task too."""
    [other] = await seed_tasks(conn, settings, priority=1)
    root, l1, l2, l3, bystander = await graph(
        conn,
        settings,
        {"ref": "root", "max_retries": 0, "priority": 5},
        {"ref": "l1", "depends_on": ["root"]},
        {"ref": "l2", "depends_on": ["l1"]},
        {"ref": "l3", "depends_on": ["l2"]},
        {"depends_on": [other.id]},
    )
    return root, [l1, l2, l3], bystander


async def test_a_final_failure_cancels_three_levels_down(conn: Conn, settings: Settings) -> None:
    root, levels, bystander = await three_levels(conn, settings)
    [claimed] = await transitions.claim(
        conn, "work", 1, worker="Worker 1", owner="w-1", lease_seconds=30
    )
    assert claimed.task.id == root.id
    await transitions.report_outcomes(
        conn, [Outcome(root.id, claimed.token, False, error="boom")], settings
    )
    assert await status(conn, root) == "failed"
    above = root
    for task in levels:
        stored = await queries.get_task(conn, task.id)
        assert stored.status == "cancelled"
        assert stored.error == (
            f"dependency {above.id} failed"
            if above is root
            else f"dependency {above.id} was cancelled"
        )
        events = await conn.redis.lrange(conn.keys.task_events(task.id), 0, -1)
        assert codec.loads(events[-1])["event"] == "task.cancelled"
        above = task
    assert await status(conn, bystander) == "waiting"
    assert await conn.redis.llen(conn.keys.cascade) == 0
    await assert_consistent(conn)


async def test_a_failure_with_retries_left_cancels_nothing(conn: Conn, settings: Settings) -> None:
    _a, b = await graph(conn, settings, {"ref": "a", "max_retries": 1}, {"depends_on": ["a"]})
    await run_ready(conn, settings, ok=False)  # final=True: fails for good
    assert await status(conn, b) == "cancelled"
    c, d = await graph(conn, settings, {"ref": "c", "max_retries": 1}, {"depends_on": ["c"]})
    [claimed] = await claim_all(conn)
    await transitions.report_outcomes(
        conn, [Outcome(c.id, claimed.token, False, error="flaky")], settings
    )
    assert (await status(conn, c), await status(conn, d)) == ("retrying", "waiting")


async def test_a_cancel_cascades_three_levels_down(conn: Conn, settings: Settings) -> None:
    root, levels, bystander = await three_levels(conn, settings)
    cancelled = await transitions.cancel(conn, root.id, settings)
    assert cancelled.status == "cancelled"
    for above, task in zip([root, *levels], levels, strict=False):
        stored = await queries.get_task(conn, task.id)
        assert (stored.status, stored.error) == (
            "cancelled",
            f"dependency {above.id} was cancelled",
        )
    assert await status(conn, bystander) == "waiting"
    await assert_consistent(conn)


async def test_a_waiting_task_can_be_cancelled_and_its_dependents_follow(
    conn: Conn, settings: Settings
) -> None:
    a, b, c = await graph(
        conn, settings, {"ref": "a"}, {"ref": "b", "depends_on": ["a"]}, {"depends_on": ["b"]}
    )
    assert (await transitions.cancel(conn, b.id, settings)).status == "cancelled"
    assert await status(conn, c) == "cancelled"
    await run_ready(conn, settings)  # a completes: nothing of b or c moves
    assert [await status(conn, t) for t in (a, b, c)] == ["completed", "cancelled", "cancelled"]
    await assert_consistent(conn)


async def test_a_cascade_too_large_for_one_call_is_finished_by_the_scheduler(
    conn: Conn, settings: Settings
) -> None:
    items: list[dict[str, Any]] = [{"ref": "root"}]
    items += [{"ref": f"d{i}", "depends_on": ["root"]} for i in range(1100)]
    items += [{"depends_on": ["d1099"]}]  # one level further, past the budget
    root, *_rest = await graph(conn, settings, *items)
    await transitions.cancel(conn, root.id, settings)
    assert (await counts(conn))["cancelled"] == 1 + 1000  # CASCADE_BUDGET per call
    assert await conn.redis.llen(conn.keys.cascade) >= 1
    await drain_once(conn, settings)
    assert await conn.redis.llen(conn.keys.cascade) == 0
    assert await counts(conn) == {"total": 1102, "cancelled": 1102}
    await assert_consistent(conn)


async def test_retention_keeps_a_dependency_a_live_task_still_needs(
    conn: Conn, settings: Settings
) -> None:
    a, _b, join = await graph(
        conn, settings, {"ref": "a", "priority": 5}, {"ref": "b"}, {"depends_on": ["a", "b"]}
    )
    [first] = await transitions.claim(
        conn, "work", 1, worker="Worker 1", owner="w-1", lease_seconds=30
    )
    assert first.task.id == a.id
    await transitions.complete(conn, a.id, first.token, "A", settings)
    k = conn.keys
    await conn.redis.zadd(k.expiry, {a.id: 0})  # its RESULT_TTL has passed
    assert await transitions.purge_expired(conn) == 0
    assert await status(conn, a) == "completed"
    assert (await conn.redis.zscore(k.expiry, a.id) or 0) > codec.now_ms()  # looked at later
    await run_ready(conn, settings)  # b, then the join is pending: still needs a's result
    assert await status(conn, join) == "pending"
    await conn.redis.zadd(k.expiry, {a.id: 0})
    assert await transitions.purge_expired(conn) == 0
    await run_ready(conn, settings)  # the join completes: nothing needs a any more
    await conn.redis.zadd(k.expiry, {a.id: 0})
    assert await transitions.purge_expired(conn) == 1
    assert not await conn.redis.exists(k.task(a.id), k.task_dependents(a.id))
    await assert_consistent(conn)


async def test_retry_of_a_dependent_waits_for_its_retried_dependency(
    conn: Conn, settings: Settings
) -> None:
    a, b = await graph(conn, settings, {"ref": "a", "max_retries": 0}, {"depends_on": ["a"]})
    await run_ready(conn, settings, ok=False)
    assert await status(conn, b) == "cancelled"
    with pytest.raises(DependencyUnmet) as caught:
        await transitions.retry_failed(conn, b.id)
    assert caught.value.details == [{"task_id": a.id, "status": "failed"}]
    await transitions.retry_failed(conn, a.id)
    assert (await transitions.retry_failed(conn, b.id)).status == "waiting"
    await assert_consistent(conn)
    await run_ready(conn, settings)
    assert await status(conn, b) == "pending"
    assert await run_ready(conn, settings) == [b.id]
    await assert_consistent(conn)


async def test_retry_of_a_dependent_whose_dependencies_completed_runs_at_once(
    conn: Conn, settings: Settings
) -> None:
    a, b = await graph(conn, settings, {"ref": "a"}, {"depends_on": ["a"], "max_retries": 0})
    await run_ready(conn, settings)
    await run_ready(conn, settings, ok=False)
    assert (await transitions.retry_failed(conn, b.id)).status == "pending"
    await conn.redis.delete(conn.keys.task(a.id))  # as if purged
    await run_ready(conn, settings, ok=False)
    with pytest.raises(DependencyUnmet, match="purged"):
        await transitions.retry_failed(conn, b.id)


async def test_details_list_dependencies_and_dependents_with_status(
    conn: Conn, settings: Settings
) -> None:
    a, b, c = await graph(
        conn, settings, {"ref": "a"}, {"ref": "b"}, {"depends_on": ["a", "b"], "type": "noop"}
    )
    await run_ready(conn, settings)
    details = await queries.get_details(conn, c.id)
    assert [(r.id, r.status) for r in details.depends_on] == [
        (a.id, "completed"),
        (b.id, "completed"),
    ]
    assert details.dependents == [] and details.events[0].status == "waiting"
    assert details.task.depends_on == [a.id, b.id]
    up = await queries.get_details(conn, a.id)
    assert [(r.id, r.type, r.status) for r in up.dependents] == [(c.id, "noop", "pending")]


async def test_a_running_task_cancelled_on_request_cancels_its_dependents(
    conn: Conn, settings: Settings
) -> None:
    a, b = await graph(conn, settings, {"ref": "a"}, {"depends_on": ["a"]})
    [claimed] = await claim_all(conn)
    reply = await transitions.fail(
        conn, a.id, claimed.token, "cancelled", settings, mode="cancelled"
    )
    assert reply == ["cancelled"]
    stored = await queries.get_task(conn, b.id)
    assert (stored.status, stored.error) == ("cancelled", f"dependency {a.id} was cancelled")
    await assert_consistent(conn)
