"""Each transition script against a real Redis: every key it touches, counters and events."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared import codec, queries, transitions
from shared.errors import InvalidTransition, TaskNotFound, ValidationFailed
from shared.events import subscribe
from shared.redis import Conn
from shared.settings import Settings
from shared.transitions import Outcome
from tests.support.seed import assert_consistent, counts, create, ensure_test_types, seed_tasks
from tests.support.waiting import wait_until


async def claim(conn: Conn, n: int = 1, owner: str = "w-1") -> list[transitions.Claimed]:
    return await transitions.claim(
        conn, "work", n, worker="Worker 1", owner=owner, lease_seconds=30
    )


async def test_enqueue_writes_record_indexes_counts_and_ready_list(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings, priority=4, payload={"x": 1})
    k = conn.keys
    record = await conn.redis.hgetall(k.task(task.id))
    assert record["status"] == "pending" and record["lane"] == "work" and record["priority"] == "4"
    assert json.loads(record["payload"]) == {"x": 1}
    assert await conn.redis.lrange(k.ready("work", 4), 0, -1) == [task.id]
    assert await conn.redis.zscore(k.index_all, task.id) == float(record["created"])
    assert await counts(conn) == {"total": 1, "pending": 1}
    await assert_consistent(conn)


async def test_enqueue_batch_is_all_or_nothing(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    good = create()
    bad = create(type="email", payload="not-an-address")
    with pytest.raises(ValidationFailed):
        await transitions.enqueue(conn, [good, bad], settings)
    assert await conn.redis.dbsize() == 0


async def test_enqueue_scheduled_goes_to_delayed_and_wakes_scheduler(
    conn: Conn, settings: Settings
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    subscribed = asyncio.Event()
    messages = subscribe(conn, conn.keys.scheduler_wake, subscribed=subscribed)
    first = asyncio.ensure_future(anext(messages))
    await asyncio.wait_for(subscribed.wait(), 5)  # Redis confirmed SUBSCRIBE before the publish
    [task] = await seed_tasks(conn, settings, scheduled_for=later)
    assert task.status == "scheduled"
    assert int(await asyncio.wait_for(first, 2)) == codec.to_ms(later)
    assert await conn.redis.zscore(conn.keys.delayed, task.id) == codec.to_ms(later)
    await messages.aclose()
    await assert_consistent(conn)


async def test_past_schedule_runs_now(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings, scheduled_for=datetime.now(UTC) - timedelta(days=1))
    assert task.status == "pending"
    assert task.scheduled_for is not None


async def test_claim_takes_priority_five_first_and_fifo_within_a_level(
    conn: Conn, settings: Settings
) -> None:
    low = await seed_tasks(conn, settings, count=3, priority=1)
    high = await seed_tasks(conn, settings, count=3, priority=5)
    mid = await seed_tasks(conn, settings, count=2, priority=3)
    claimed = [c.task.id for c in await claim(conn, 8)]
    assert claimed == [t.id for t in high + mid + low]
    await assert_consistent(conn)


async def test_claim_sets_lease_owner_attempt_and_event(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    [claimed] = await claim(conn, 1, owner="w-9")
    k = conn.keys
    assert claimed.attempt == 1 and claimed.task.status == "processing"
    assert await conn.redis.zscore(k.leases, task.id) is not None
    assert await conn.redis.smembers(k.held("w-9")) == {task.id}
    events = [json.loads(e) for e in await conn.redis.lrange(k.task_events(task.id), 0, -1)]
    assert events[-1]["event"] == "task.claimed" and events[-1]["attempt"] == 1
    assert await claim(conn, 1) == []
    await assert_consistent(conn)


async def test_complete_records_result_and_releases_lease(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    [c] = await claim(conn)
    assert await transitions.report_outcomes(
        conn, [Outcome(task.id, c.token, True, {"ok": 1})], settings
    ) == ["ok"]
    done = await queries.get_task(conn, task.id)
    assert done.status == "completed" and done.result == {"ok": 1} and done.completed_at is not None
    k = conn.keys
    assert await conn.redis.zscore(k.leases, task.id) is None
    assert await conn.redis.smembers(k.held("w-1")) == set()
    assert await conn.redis.zscore(k.expiry, task.id) is not None
    assert await counts(conn) == {"total": 1, "completed": 1}
    await assert_consistent(conn)


async def test_stale_claim_cannot_complete(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    [c] = await claim(conn)
    assert await transitions.complete(conn, task.id, c.token + "x", None, settings) == "stale"
    assert (await queries.get_task(conn, task.id)).status == "processing"


async def test_an_outcome_quoting_a_lost_claim_is_fenced_off_after_a_failover(
    conn: Conn, settings: Settings
) -> None:
    """After a failover (or power loss) the new primary may never have seen the last claim,
    so the next claim repeats its attempt number: its token does not repeat, so the report
    of the lost claim's run cannot land on the new run."""
    [task] = await seed_tasks(conn, settings)
    [lost] = await claim(conn)
    # What the new primary holds: the task as it was before that claim.
    await transitions.requeue(conn, task.id, lost.token, "failover")
    await conn.redis.hset(conn.keys.task(task.id), "attempt", 0)
    [new] = await claim(conn)
    assert new.attempt == lost.attempt == 1 and new.token != lost.token
    outcome = [Outcome(task.id, lost.token, True, {"from": "the lost run"})]
    assert await transitions.report_outcomes(conn, outcome, settings) == ["stale"]
    assert await transitions.fail(conn, task.id, lost.token, "old run", settings) == [
        "stale",
        "processing",
    ]
    assert await transitions.requeue(conn, task.id, lost.token, "old run") == "stale"
    assert await transitions.complete(conn, task.id, new.token, 1, settings) == "ok"
    assert (await queries.get_task(conn, task.id)).result == 1


async def test_failure_retries_with_backoff_until_budget_then_fails(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings, max_retries=2)
    outcomes = []
    for _ in range(3):
        [c] = await wait_until(lambda: claim(conn), message="claim")
        [code] = await transitions.report_outcomes(
            conn, [Outcome(task.id, c.token, False, error="boom")], settings
        )
        outcomes.append(code)
        if code == "retrying":
            assert (await queries.get_task(conn, task.id)).status == "retrying"
            await wait_until(lambda: _promote(conn), message="promotion")
    assert outcomes == ["retrying", "retrying", "failed"]
    final = await queries.get_task(conn, task.id)
    assert final.status == "failed" and final.retry_count == 2 and final.error == "boom"
    details = await queries.get_details(conn, task.id)
    assert [a.outcome for a in details.attempts] == ["retrying", "retrying", "failed"]
    await assert_consistent(conn)


async def _promote(conn: Conn) -> int:
    moved, _ = await transitions.promote_due(conn)
    return moved


async def test_promote_moves_only_due_tasks(conn: Conn, settings: Settings) -> None:
    soon = datetime.now(UTC) + timedelta(milliseconds=200)
    later = datetime.now(UTC) + timedelta(hours=1)
    [a] = await seed_tasks(conn, settings, scheduled_for=soon)
    [b] = await seed_tasks(conn, settings, scheduled_for=later)
    assert await transitions.promote_due(conn) == (0, codec.to_ms(soon))
    await wait_until(lambda: _promote(conn), message="due promotion")
    assert (await queries.get_task(conn, a.id)).status == "pending"
    assert (await queries.get_task(conn, b.id)).status == "scheduled"
    await assert_consistent(conn)


async def test_lease_expiry_is_recovered_and_runs_again(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    await transitions.claim(conn, "work", 1, worker="W", owner="w-1", lease_seconds=0.05)
    assert await transitions.fail(conn, task.id, None, "lease expired", settings, mode="lease") in (
        ["alive"],
        ["recovered"],
    )
    await wait_until(
        lambda: _recovered(conn, settings, task.id), timeout=3, message="lease expiry recovery"
    )
    [again] = await claim(conn)
    assert again.task.id == task.id and again.attempt == 2
    await assert_consistent(conn)


async def _recovered(conn: Conn, settings: Settings, task_id: str) -> bool:
    await transitions.fail(conn, task_id, None, "lease expired", settings, mode="lease")
    return (await queries.get_task(conn, task_id)).status == "pending"


async def test_live_lease_is_not_taken(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    await claim(conn)
    assert await transitions.fail(conn, task.id, None, "x", settings, mode="lease") == ["alive"]
    assert (await queries.get_task(conn, task.id)).status == "processing"


async def test_lost_owner_recovery_checks_owner(conn: Conn, settings: Settings) -> None:
    [task] = await seed_tasks(conn, settings)
    await claim(conn, owner="w-1")
    assert (await transitions.fail(conn, task.id, None, "x", settings, mode="lost:w-2"))[
        0
    ] == "stale"
    assert await transitions.fail(conn, task.id, None, "lost", settings, mode="lost:w-1") == [
        "recovered"
    ]
    task_now = await queries.get_task(conn, task.id)
    assert task_now.status == "pending" and task_now.retry_count == 0
    assert await conn.redis.lindex(conn.keys.ready("work", 3), 0) == task.id
    await assert_consistent(conn)


async def test_cancel_pending_scheduled_and_request_processing(
    conn: Conn, settings: Settings
) -> None:
    [pending] = await seed_tasks(conn, settings)
    [scheduled] = await seed_tasks(
        conn, settings, scheduled_for=datetime.now(UTC) + timedelta(hours=1)
    )
    assert (await transitions.cancel(conn, pending.id, settings)).status == "cancelled"
    assert (await transitions.cancel(conn, scheduled.id, settings)).status == "cancelled"
    # The cancelled id waits in its list, counted as skipped, until a claim drops it.
    ready = conn.keys.ready("work", 3)
    assert await conn.redis.lrange(ready, 0, -1) == [pending.id]
    assert await conn.redis.hget(conn.keys.ready_skips, ready) == "1"
    assert (await queries.get_stats(conn, dead_after_seconds=1)).queue_depth_by_priority["3"] == 0
    assert await conn.redis.zcard(conn.keys.delayed) == 0
    [running] = await seed_tasks(conn, settings)
    assert [c.task.id for c in await claim(conn)] == [running.id]
    assert await conn.redis.llen(ready) == 0
    assert await conn.redis.hget(conn.keys.ready_skips, ready) == "0"
    # A running task is not moved: its cancel is requested (SPEC section 10; its worker ends
    # it, see tests/integration/services/test_cancel_running.py).
    requested = await transitions.cancel(conn, running.id, settings)
    assert requested.status == "processing" and requested.cancel_requested
    cancelled = await queries.get_task(conn, pending.id)
    with pytest.raises(InvalidTransition):
        await transitions.cancel(conn, cancelled.id, settings)
    with pytest.raises(TaskNotFound):
        await transitions.cancel(conn, "nope", settings)
    await assert_consistent(conn)


async def test_cancel_costs_the_same_whatever_the_queue_length(
    conn: Conn, settings: Settings
) -> None:
    """A cancel never scans a ready list: mass cancels in a long queue must not block
    Redis. Measured in commands Redis runs, not time: a pending task's cancel calls the
    same commands with 10 or 10,000 tasks queued, and none of them is an LREM."""

    async def commands_of_one_cancel(queued: int) -> dict[str, int]:
        await conn.redis.flushdb()
        tasks = await seed_tasks(conn, settings, count=queued)
        await conn.redis.config_resetstat()
        await transitions.cancel(conn, tasks[queued // 2].id, settings)
        stats = await conn.redis.info("commandstats")
        return {name: int(v["calls"]) for name, v in stats.items() if name != "cmdstat_hgetall"}

    short, long = await commands_of_one_cancel(10), await commands_of_one_cancel(10_000)
    assert short == long and "cmdstat_lrem" not in long
    await assert_consistent(conn)


async def test_claim_skips_cancelled_ids_without_giving_way_to_a_lower_priority(
    conn: Conn, settings: Settings
) -> None:
    urgent = await seed_tasks(conn, settings, count=6, priority=5)
    [low] = await seed_tasks(conn, settings, priority=1)
    for task in urgent[:4]:
        await transitions.cancel(conn, task.id, settings)
    claimed = await transitions.claim(
        conn, "work", 2, worker="w", owner="w-1", lease_seconds=settings.task_lease_seconds
    )
    assert [c.task.id for c in claimed] == [t.id for t in urgent[4:]]
    assert (await queries.get_task(conn, low.id)).status == "pending"
    await assert_consistent(conn)


async def test_cancel_races_claim_one_wins(conn: Conn, settings: Settings) -> None:
    tasks = await seed_tasks(conn, settings, count=200)

    async def cancel_one(task_id: str) -> bool:
        try:  # a claimed task's cancel is only requested (SPEC section 10)
            return (await transitions.cancel(conn, task_id, settings)).status == "cancelled"
        except InvalidTransition:
            return False

    results = await asyncio.gather(
        *(cancel_one(t.id) for t in tasks), *(claim(conn, 5) for _ in range(40))
    )
    cancelled = {t.id for t, ok in zip(tasks, results[:200], strict=True) if ok}
    claimed = {c.task.id for batch in results[200:] for c in batch}  # type: ignore[union-attr]
    assert cancelled.isdisjoint(claimed)
    assert cancelled | claimed == {t.id for t in tasks} - set(
        await conn.redis.lrange(conn.keys.ready("work", 3), 0, -1)
    )
    await assert_consistent(conn)


async def test_retry_failed_gives_fresh_budget_and_keeps_history(
    conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings, max_retries=0)
    [c] = await claim(conn)
    await transitions.report_outcomes(
        conn, [Outcome(task.id, c.token, False, error="nope")], settings
    )
    assert (await queries.get_task(conn, task.id)).status == "failed"
    again = await transitions.retry_failed(conn, task.id)
    assert again.status == "pending" and again.retry_count == 0
    assert await conn.redis.zscore(conn.keys.expiry, task.id) is None
    with pytest.raises(InvalidTransition):
        await transitions.retry_failed(conn, task.id)
    events = [e.event for e in (await queries.get_details(conn, task.id)).events]
    assert events == ["task.created", "task.claimed", "task.failed", "task.retried"]
    await assert_consistent(conn)


async def test_a_retried_task_cancelled_before_its_time_runs_now_and_says_so(
    conn: Conn, settings: Settings
) -> None:
    """A retry runs the task now, whatever its scheduled_for: it starts now, not 'at' a
    time still to come (started after completed, as it was)."""
    when = datetime.now(UTC) + timedelta(hours=1)
    [task] = await seed_tasks(conn, settings, scheduled_for=when)
    await transitions.cancel(conn, task.id, settings)
    assert (await transitions.retry_failed(conn, task.id)).status == "pending"
    [c] = await claim(conn)
    assert c.task.id == task.id and c.task.started_at is not None
    assert c.task.started_at < when - timedelta(minutes=59)
    await transitions.report_outcomes(conn, [Outcome(task.id, c.token, True)], settings)
    done = await queries.get_task(conn, task.id)
    assert done.started_at and done.completed_at and done.started_at <= done.completed_at
    await assert_consistent(conn)


async def test_started_is_the_due_time_only_for_a_task_claimed_just_ahead_of_it(
    conn: Conn, settings: Settings
) -> None:
    """A task promoted ahead of its time starts at that time (its consumer waits for it, up
    to MAX_EARLY_SECONDS); one due further off is not waited for and starts now."""
    from shared.consumer import MAX_EARLY_SECONDS

    lib = (Path(codec.__file__).parent / "scripts" / "_lib.lua").read_text()
    assert f"local MAX_EARLY_MS = {round(MAX_EARLY_SECONDS * 1000)}\n" in lib
    soon, late = await seed_tasks(conn, settings, count=2)
    now = await conn.server_ms()
    # As promote_due leaves them: pending, with a scheduled time still to come.
    await conn.redis.hset(conn.keys.task(soon.id), "run_at", now + 500)
    await conn.redis.hset(conn.keys.task(late.id), "run_at", now + 3_600_000)
    claimed = {c.task.id: c.task for c in await claim(conn, 2)}
    assert claimed[soon.id].started_at == codec.from_ms(now + 500)
    started_late = claimed[late.id].started_at
    assert started_late is not None
    assert abs(started_late.timestamp() * 1000 - now) < 60_000
    await assert_consistent(conn)


async def test_requeue_hands_back_to_the_front(conn: Conn, settings: Settings) -> None:
    a, b = await seed_tasks(conn, settings, count=2)
    [c] = await claim(conn)
    assert await transitions.requeue(conn, a.id, c.token, "shutdown") == "ok"
    assert await conn.redis.lrange(conn.keys.ready("work", 3), 0, -1) == [a.id, b.id]
    await assert_consistent(conn)


async def test_purge_expired_deletes_record_history_and_counts(
    conn: Conn, settings: Settings
) -> None:
    short = settings.model_copy(update={"result_ttl_seconds": 1})
    [task] = await seed_tasks(conn, short)
    [c] = await claim(conn)
    await transitions.report_outcomes(conn, [Outcome(task.id, c.token, True)], short)
    assert await transitions.purge_expired(conn) == 0
    await wait_until(lambda: transitions.purge_expired(conn), timeout=3, message="purge")
    assert not await conn.redis.exists(conn.keys.task(task.id), conn.keys.task_events(task.id))
    assert await counts(conn) == {}
    await assert_consistent(conn)


async def test_idempotency_under_concurrent_identical_requests(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    results = await asyncio.gather(
        *(
            transitions.enqueue(conn, [create()], settings, idempotency_key="order-42")
            for _ in range(20)
        )
    )
    ids = {tasks[0].id for tasks, _ in results}
    assert len(ids) == 1
    assert sum(1 for _, replayed in results if not replayed) == 1
    assert await counts(conn) == {"total": 1, "pending": 1}


def per_node(reply: Any) -> list[Any]:
    """A reply per node: a cluster client answers node-wide commands as {node: reply}."""
    return list(reply.values()) if isinstance(reply, dict) else [reply]


async def forget_scripts(conn: Conn) -> None:
    """What a restart without persistence, or a failover to a node that never had them,
    does to the scripts: gone (the Functions library on Redis 7, the script cache on 6.2),
    on every primary of a cluster."""
    await conn.redis.script_flush()
    if conn.use_functions:
        await conn.redis.function_flush()
        assert all(libraries == [] for libraries in per_node(await conn.redis.function_list()))


async def test_scripts_survive_script_flush(conn: Conn, settings: Settings) -> None:
    await seed_tasks(conn, settings)
    [c] = await claim(conn)
    await forget_scripts(conn)
    codes = await transitions.report_outcomes(conn, [Outcome(c.task.id, c.token, True)], settings)
    assert codes == ["ok"]
    # A direct call (not pipelined) reloads them too.
    await forget_scripts(conn)
    [task] = await seed_tasks(conn, settings)
    assert (await queries.get_task(conn, task.id)).status == "pending"


async def test_redis_7_runs_the_scripts_as_one_functions_library(
    conn: Conn, settings: Settings
) -> None:
    """FUNCTION LOAD is replicated and kept in the RDB (SCRIPT LOAD is neither), and FCALL
    pipelines on Redis Cluster: Redis 7 gets the library, 6.2 the script cache."""
    version = (await conn.redis.info("server"))["redis_version"]
    assert conn.use_functions == (int(version.split(".")[0]) >= 7)
    if not conn.use_functions:
        return
    for libraries in per_node(await conn.redis.function_list()):  # every primary has it
        [library] = [dict(zip(lib[::2], lib[1::2], strict=True)) for lib in libraries]
        names = {dict(zip(f[::2], f[1::2], strict=True))["name"] for f in library["functions"]}
        assert names == {conn.scripts[name].function for name in conn.scripts}
    node: dict[str, Any] = {}
    if conn.topology == "cluster":  # the stats of the node that owns the queue's slot
        node = {"target_nodes": conn.redis.get_node_from_key(conn.keys.counts)}
    await conn.redis.config_resetstat(**node)
    ensure_test_types()
    await transitions.enqueue(conn, [create()], settings)
    stats = await conn.redis.info("commandstats", **node)
    assert stats["cmdstat_fcall"]["calls"] >= 1 and "cmdstat_evalsha" not in stats


async def test_a_task_history_keeps_its_newest_thousand_events(
    conn: Conn, settings: Settings
) -> None:
    """Manual retries give a task a fresh budget every time, so without a cap its events
    list would grow for ever."""
    [task] = await seed_tasks(conn, settings, max_retries=0)
    for _ in range(400):  # three events a round: claimed, failed, retried
        [c] = await claim(conn)
        await transitions.report_outcomes(conn, [Outcome(task.id, c.token, False)], settings)
        await transitions.retry_failed(conn, task.id)
    events = conn.keys.task_events(task.id)
    assert await conn.redis.llen(events) == 1000
    newest = json.loads(await conn.redis.lindex(events, -1))
    assert newest["event"] == "task.retried"
    await assert_consistent(conn)
