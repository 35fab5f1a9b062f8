"""Hand-over: a consumer offers idle slots in its claim; a script that makes a task ready
claims it for the first offer and pushes the record to that consumer's inbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared import codec, heartbeats, queries, transitions
from shared.redis import Conn
from shared.settings import Settings
from tests.support.seed import assert_consistent, counts, seed_tasks


async def offer(
    conn: Conn, slots: int, owner: str = "w-1", lease: float = 30
) -> transitions.ClaimReply:
    return await transitions.claim_or_offer(
        conn, "work", slots, worker=f"Worker {owner}", owner=owner, lease_seconds=lease
    )


async def inbox(conn: Conn, owner: str = "w-1") -> list[transitions.Claimed]:
    messages = await conn.redis.lrange(conn.keys.inbox(owner), 0, -1)
    return [item for m in messages if (item := transitions.handed_over(m, owner)) is not None]


async def test_unfilled_slots_are_offered_and_an_enqueue_is_handed_over(
    conn: Conn, settings: Settings
) -> None:
    k = conn.keys
    reply = await offer(conn, 3)
    assert (reply.claimed, reply.withdrawn, reply.offered, reply.waiting) == ([], 0, 3, 0)
    assert await conn.redis.lrange(k.idle("work"), 0, -1) == ["w-1"] * 3
    before = codec.now_ms()

    [task] = await seed_tasks(conn, settings, payload={"n": 7})

    [handed] = await inbox(conn)
    assert handed.task.id == task.id and handed.attempt == 1 and handed.task.payload == {"n": 7}
    record = await conn.redis.hgetall(k.task(task.id))
    assert record["status"] == "processing" and record["owner"] == "w-1"
    assert record["worker"] == "Worker w-1" and int(record["started"]) >= before
    assert await conn.redis.smembers(k.held("w-1")) == {task.id}
    lease = await conn.redis.zscore(k.leases, task.id)
    assert lease is not None and lease >= before + 30_000
    assert await conn.redis.llen(k.idle("work")) == 2  # one offer used
    assert await counts(conn) == {"total": 1, "processing": 1}
    details = await queries.get_details(conn, task.id)
    assert [e.event for e in details.events] == ["task.created", "task.claimed"]
    await assert_consistent(conn)


async def test_handed_over_task_completes_like_a_claimed_one(
    conn: Conn, settings: Settings
) -> None:
    await offer(conn, 1)
    [task] = await seed_tasks(conn, settings)
    [handed] = await inbox(conn)
    codes = await transitions.report_outcomes(
        conn, [transitions.Outcome(task.id, handed.token, True, result=42)], settings
    )
    assert codes == ["ok"]
    done = await queries.get_task(conn, task.id)
    assert done.status == "completed" and done.result == 42
    assert await conn.redis.smembers(conn.keys.held("w-1")) == set()
    await assert_consistent(conn)


async def test_a_claim_withdraws_the_offers_left_and_reports_what_waits_in_the_inbox(
    conn: Conn, settings: Settings
) -> None:
    await offer(conn, 3)
    await seed_tasks(conn, settings)  # uses one offer
    reply = await offer(conn, 0)  # re-sync: two offers back, nothing ready, offered again
    assert (reply.withdrawn, reply.offered, reply.waiting) == (2, 2, 1)
    assert await conn.redis.lrange(conn.keys.idle("work"), 0, -1) == ["w-1"] * 2
    without = await transitions.claim_or_offer(
        conn, "work", 0, worker="W", owner="w-1", lease_seconds=30, offer=False
    )
    assert (without.withdrawn, without.offered) == (2, 0)
    assert await conn.redis.llen(conn.keys.idle("work")) == 0
    await assert_consistent(conn)


async def test_nothing_is_offered_while_tasks_are_ready_and_priority_is_kept(
    conn: Conn, settings: Settings
) -> None:
    [low] = await seed_tasks(conn, settings, priority=1)
    [high] = await seed_tasks(conn, settings, priority=5)
    reply = await offer(conn, 1)
    assert [c.task.id for c in reply.claimed] == [high.id] and reply.offered == 0
    reply = await offer(conn, 3)
    assert [c.task.id for c in reply.claimed] == [low.id] and reply.offered == 2
    await assert_consistent(conn)


async def test_withdrawn_and_forgotten_offers_are_skipped(conn: Conn, settings: Settings) -> None:
    k = conn.keys
    await offer(conn, 2, owner="gone")
    await offer(conn, 1, owner="live")
    await heartbeats.withdraw_offers(conn, "gone")
    assert await conn.redis.lrange(k.idle("work"), 0, -1) == ["live"]
    # A stale offer whose consumer was forgotten (its offers HASH entry gone) is dropped too.
    await conn.redis.lpush(k.idle("work"), "ghost")
    [task] = await seed_tasks(conn, settings)
    assert [c.task.id for c in await inbox(conn, "live")] == [task.id]
    assert await conn.redis.llen(k.idle("work")) == 0
    [later] = await seed_tasks(conn, settings)  # no offer left: the ready list
    assert await conn.redis.lrange(k.ready("work", later.priority), 0, -1) == [later.id]
    await assert_consistent(conn)


async def test_sealed_inbox_ends_with_an_empty_message(conn: Conn, settings: Settings) -> None:
    await offer(conn, 1)
    [task] = await seed_tasks(conn, settings)
    await heartbeats.withdraw_offers(conn, "w-1", seal_inbox=True)
    messages = await conn.redis.lrange(conn.keys.inbox("w-1"), 0, -1)
    assert len(messages) == 2 and messages[-1] == ""
    assert transitions.handed_over(messages[-1], "w-1") is None
    assert json.loads(messages[0])[1] == task.id  # the HGETALL pairs, id first


async def test_promotion_and_recovery_hand_over_too(conn: Conn, settings: Settings) -> None:
    due = datetime.now(UTC) + timedelta(seconds=5)
    [scheduled] = await seed_tasks(conn, settings, scheduled_for=due)
    await offer(conn, 1, owner="idle")
    assert await transitions.promote_due(conn) == (0, codec.to_ms(due))  # not yet due
    assert await transitions.promote_due(conn, lead_seconds=6) == (1, None)  # within the lead
    assert [c.task.id for c in await inbox(conn, "idle")] == [scheduled.id]

    [lost] = await seed_tasks(conn, settings)
    await transitions.claim(conn, "work", 1, worker="W", owner="dead", lease_seconds=30)
    await offer(conn, 1, owner="idle")
    reply = await transitions.fail(conn, lost.id, None, "worker lost", settings, mode="lost:dead")
    assert reply == ["recovered"]
    handed = [c.task.id for c in await inbox(conn, "idle")]
    assert handed == [scheduled.id, lost.id]
    details = await queries.get_details(conn, lost.id)
    assert [e.event for e in details.events][-2:] == ["task.recovered", "task.claimed"]
    await assert_consistent(conn)
