"""A task cancelled while pending leaves its id in its ready or parked list (cancel.lua counts
it in that list's skips: a queue's ready depth is each list's length minus its skips). When
the task is pending again (retried, then promoted or recovered), that entry is made live again
rather than a second one pushed: with two entries of one task, a claim or a park could take
either, and the skip stayed on a list that no longer held the stale one (depth off by one,
below zero too). `assert_consistent` checks each list's skips against its length.
"""

from __future__ import annotations

from shared import queries, transitions
from shared.redis import Conn
from shared.registry import TaskType, register
from shared.settings import Settings
from tests.support.seed import assert_consistent, seed_tasks


async def take(conn: Conn, owner: str, types: str | None, n: int = 10) -> list[str]:
    reply = await transitions.claim_or_offer(
        conn, "work", n, worker=owner, owner=owner, lease_seconds=30, offer=False, types=types
    )
    return [c.task.id for c in reply.claimed]


async def depth(conn: Conn) -> dict[str, int]:
    stats = await queries.get_stats(conn, dead_after_seconds=30)
    return {"ready": stats.ready_count, "pending": stats.pending_count}


async def test_a_retried_task_takes_its_old_entry_back(conn: Conn, settings: Settings) -> None:
    k = conn.keys
    [task] = await seed_tasks(conn, settings, priority=5)
    await transitions.cancel(conn, task.id, settings)
    assert await conn.redis.hget(k.ready_skips, k.ready("work", 5)) == "1"
    await transitions.retry_failed(conn, task.id)
    assert await conn.redis.lrange(k.ready("work", 5), 0, -1) == [task.id]  # one entry, live
    assert int(await conn.redis.hget(k.ready_skips, k.ready("work", 5)) or 0) == 0
    assert await conn.redis.hget(k.task(task.id), "stale_in") is None
    assert await depth(conn) == {"ready": 1, "pending": 1}
    await assert_consistent(conn)
    assert await take(conn, "A", None) == [task.id]
    await assert_consistent(conn)


async def test_a_retried_task_parked_twice_over_leaves_no_skip_behind(
    conn: Conn, settings: Settings
) -> None:
    """The auditor's repro B: cancelled, retried, parked by a consumer that does not run its
    type, then claimed by one that does. Before, the ready list kept a skip and no entry:
    a depth of -1 at priority 5, for good."""
    register(TaskType("other", handler=lambda payload, ctx: payload))
    [task] = await seed_tasks(conn, settings, priority=5)
    await transitions.cancel(conn, task.id, settings)
    await transitions.retry_failed(conn, task.id)
    assert await take(conn, "C", "other") == []  # parks it
    assert (await queries.get_stats(conn, dead_after_seconds=30)).parked_by_type == {"noop": 1}
    await assert_consistent(conn)
    assert await take(conn, "A", None) == [task.id]
    stats = await queries.get_stats(conn, dead_after_seconds=30)
    assert stats.queue_depth_by_priority["5"] == 0 and stats.ready_count == 0
    await assert_consistent(conn)


async def test_a_parked_task_cancelled_and_retried_is_parked_again(
    conn: Conn, settings: Settings
) -> None:
    """The auditor's repro A: the parked list kept a skip and no entry, so the next task
    parked there was not counted."""
    register(TaskType("other", handler=lambda payload, ctx: payload))
    k = conn.keys
    [task] = await seed_tasks(conn, settings)
    assert await take(conn, "X", "other") == []  # parks it
    await transitions.cancel(conn, task.id, settings)
    await assert_consistent(conn)
    await transitions.retry_failed(conn, task.id)
    assert await conn.redis.hget(k.task(task.id), "parked") == "1"  # live where it waited
    assert await depth(conn) == {"ready": 1, "pending": 1}
    await assert_consistent(conn)
    assert await take(conn, "Y", "noop", n=1) == [task.id]
    assert await take(conn, "Y", "noop", n=1) == []
    [later] = await seed_tasks(conn, settings)
    assert await take(conn, "X", "other") == []  # parks the next one in the same list
    assert await depth(conn) == {"ready": 1, "pending": 1}
    await assert_consistent(conn)
    assert await take(conn, "Y", "noop") == [later.id]


async def test_a_claim_that_drops_a_stale_entry_forgets_it(conn: Conn, settings: Settings) -> None:
    k = conn.keys
    [task] = await seed_tasks(conn, settings)
    await transitions.cancel(conn, task.id, settings)
    assert await take(conn, "A", None) == []  # comes across the stale entry: dropped
    assert await conn.redis.llen(k.ready("work", 3)) == 0
    assert int(await conn.redis.hget(k.ready_skips, k.ready("work", 3)) or 0) == 0
    assert await conn.redis.hget(k.task(task.id), "stale_in") is None
    await transitions.retry_failed(conn, task.id)  # nothing stale left: a fresh entry
    assert await conn.redis.lrange(k.ready("work", 3), 0, -1) == [task.id]
    await assert_consistent(conn)


async def test_a_stale_entry_outlives_a_hand_over_and_is_revived_by_a_promotion(
    conn: Conn, settings: Settings
) -> None:
    """Cancelled while pending, retried while a consumer waits (handed over, the old entry
    stays skipped), failed with a retry left, promoted: the old entry is made live, not a
    second one pushed."""
    k = conn.keys
    [task] = await seed_tasks(conn, settings, max_retries=1)
    await transitions.cancel(conn, task.id, settings)
    stale_list = k.ready("work", 3)
    assert await conn.redis.hget(k.task(task.id), "stale_in") == stale_list
    # A consumer offers a slot while the stale entry sits in the list: the retry hands over.
    await conn.redis.rpush(k.idle("work"), "W")
    await conn.redis.hset(k.offers("work"), "W", "30000|*|W")
    await transitions.retry_failed(conn, task.id)
    record = await conn.redis.hgetall(k.task(task.id))
    assert record["status"] == "processing" and record["owner"] == "W"
    assert record["stale_in"] == stale_list
    assert await conn.redis.hget(k.ready_skips, stale_list) == "1"
    await assert_consistent(conn)

    [code, *_] = await transitions.fail(conn, task.id, record["token"], "boom", settings)
    assert code == "retrying"
    await conn.redis.zadd(k.delayed, {task.id: 0}, xx=True)  # due now, not after its backoff
    assert (await transitions.promote_due(conn))[0] == 1
    assert await conn.redis.lrange(stale_list, 0, -1) == [task.id]
    assert int(await conn.redis.hget(k.ready_skips, stale_list) or 0) == 0
    assert await conn.redis.hget(k.task(task.id), "stale_in") is None
    await assert_consistent(conn)
    assert await take(conn, "A", None) == [task.id]
    await assert_consistent(conn)
