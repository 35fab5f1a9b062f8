"""Queue controls where tasks start (SPEC section 9): claim.lua and hand_over honour a queue's
pause, rate limit and max_concurrency for every consumer at once, and the scripts that end
processing announce a freed slot of a queue that was at its cap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shared import queue_control, transitions
from shared.keys import QUEUE_CONTROL_CHANNEL
from shared.queue_control import QueueLimits
from shared.redis import Conn
from shared.settings import Settings
from tests.support.control_channel import assert_silent, control_messages, next_message
from tests.support.seed import assert_consistent, counts, seed_tasks
from tests.support.waiting import wait_until

LEASE_MS = 30_000


async def claim(
    conn: Conn, count: int, owner: str = "w-1", queue: str | None = None
) -> transitions.ClaimReply:
    return await transitions.claim_or_offer(
        conn,
        "work",
        count,
        worker=f"Worker {owner}",
        owner=owner,
        lease_seconds=LEASE_MS / 1000,
        queue=queue,
    )


async def inbox(conn: Conn, owner: str = "w-1") -> list[str]:
    messages = await conn.redis.lrange(conn.keys.inbox(owner), 0, -1)
    return [item.task.id for m in messages if (item := transitions.handed_over(m, owner))]


async def server_now(conn: Conn) -> int:
    seconds, micros = await conn.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def limit(conn: Conn, **limits: object) -> None:
    await queue_control.set_limits(conn, "default", QueueLimits.model_validate(limits))


async def test_a_paused_queue_starts_nothing_holds_no_offers_and_resumes(
    conn: Conn, settings: Settings
) -> None:
    k = conn.keys
    offered = await claim(conn, 2)
    assert offered.offered == 2 and await conn.redis.llen(k.idle("work")) == 2
    async with control_messages(conn) as messages:
        await queue_control.pause(conn, "default")
        assert await next_message(messages) == {"queue": "default", "event": "paused"}
    assert await conn.redis.llen(k.idle("work")) == 0  # pausing withdrew the offers

    tasks = await seed_tasks(conn, settings, count=3)
    assert await inbox(conn) == []
    reply = await claim(conn, 5)
    assert reply.paused and reply.claimed == [] and reply.offered == 0
    assert reply.retry_at_ms is None
    assert await conn.redis.llen(k.idle("work")) == 0
    assert await counts(conn) == {"total": 3, "pending": 3}
    await assert_consistent(conn)

    async with control_messages(conn) as messages:
        config = await queue_control.resume(conn, "default")
        assert await next_message(messages) == {"queue": "default", "event": "resumed"}
    assert not config.paused
    reply = await claim(conn, 5)
    assert not reply.paused and [c.task.id for c in reply.claimed] == [t.id for t in tasks]
    assert reply.offered == 2  # nothing else ready: the rest is offered again
    await assert_consistent(conn)


async def test_no_hand_over_to_an_offer_while_paused(conn: Conn, settings: Settings) -> None:
    k = conn.keys
    await claim(conn, 2)
    # An offer made before the pause took effect (pause() itself withdraws them).
    await conn.redis.hset(k.config, "paused", "1")
    async with control_messages(conn) as messages:
        [task] = await seed_tasks(conn, settings)
        # The offers went, so no later task can start ahead of this one: their consumer is
        # told to claim again, which says "paused".
        assert await next_message(messages) == {
            "queue": "default",
            "event": "offers",
            "lane": "work",
        }
    assert await inbox(conn) == []
    assert await conn.redis.lrange(k.ready("work", task.priority), 0, -1) == [task.id]
    assert await conn.redis.llen(k.idle("work")) == 0
    await assert_consistent(conn)


async def test_a_rate_limit_spreads_starts_one_per_interval_across_owners(
    conn: Conn, settings: Settings
) -> None:
    """10 per second is one start every 100 ms, whoever claims: so no second-long window,
    wherever it falls, holds more than 10 starts (a burst allowance would allow 19)."""
    await limit(conn, rate_limit={"tasks": 10, "per_seconds": 1})
    await seed_tasks(conn, settings, count=30)
    before = await server_now(conn)
    replies = await asyncio.gather(*(claim(conn, 4, owner=f"w-{i}") for i in range(5)))
    after = await server_now(conn)

    assert sum(len(r.claimed) for r in replies) == 1  # one token now, across owners
    held_back = [r for r in replies if len(r.claimed) < 4]
    assert len(held_back) == 5 and all(r.retry_at_ms is not None for r in held_back)
    retry_at = held_back[0].retry_at_ms
    assert retry_at is not None and before + 100 <= retry_at <= after + 101
    assert {r.retry_at_ms for r in held_back} == {retry_at}
    assert all(r.offered == 0 for r in replies)
    assert await conn.redis.llen(conn.keys.idle("work")) == 0
    assert await counts(conn) == {"total": 30, "pending": 29, "processing": 1}

    async def next_start() -> transitions.ClaimReply | None:
        reply = await claim(conn, 4, owner="w-late")
        return reply if reply.claimed else None

    reply = await wait_until(next_start, timeout=5, interval=0.01, message="the next token")
    assert await server_now(conn) >= retry_at
    assert len(reply.claimed) == 1  # one token per 100 ms
    assert reply.retry_at_ms is not None and reply.retry_at_ms >= retry_at + 100
    await assert_consistent(conn)


async def test_a_rate_change_applies_from_the_next_start_without_a_fresh_burst(
    conn: Conn, settings: Settings
) -> None:
    await limit(conn, rate_limit={"tasks": 10, "per_seconds": 10})
    await seed_tasks(conn, settings, count=30)
    assert len((await claim(conn, 10)).claimed) == 1  # one start per second
    await limit(conn, rate_limit={"tasks": 20, "per_seconds": 10})
    now = await server_now(conn)
    reply = await claim(conn, 10)
    # Still no room: the start already made holds its interval of the old rate (1 s).
    assert reply.claimed == [] and reply.retry_at_ms is not None
    assert now < reply.retry_at_ms <= now + 1001
    await limit(conn)  # no limits: the limiter's state goes with the rate
    assert await conn.redis.hgetall(conn.keys.config) == {}
    assert len((await claim(conn, 10)).claimed) == 10
    await assert_consistent(conn)


async def test_max_concurrency_caps_processing_across_owners_and_a_freed_slot_is_announced(
    conn: Conn, settings: Settings
) -> None:
    await limit(conn, max_concurrency=2)
    await seed_tasks(conn, settings, count=5)
    before = await server_now(conn)
    first, second, third = [
        await claim(conn, n, owner=o) for o, n in (("a", 1), ("b", 3), ("c", 2))
    ]
    after = await server_now(conn)
    assert [len(r.claimed) for r in (first, second, third)] == [1, 1, 0]
    assert first.retry_at_ms is None  # it got all it wanted
    for reply in (second, third):  # at the cap: back after a lease, or at the "slot" message
        assert reply.retry_at_ms is not None
        assert before + LEASE_MS <= reply.retry_at_ms <= after + LEASE_MS
        assert reply.offered == 0
    assert await conn.redis.llen(conn.keys.idle("work")) == 0

    async with control_messages(conn) as messages:
        done = first.claimed[0]
        outcome = transitions.Outcome(done.task.id, done.token, True, result=1)
        assert await transitions.report_outcomes(conn, [outcome], settings) == ["ok"]
        assert await next_message(messages) == {"queue": "default", "event": "slot"}
        refill = await claim(conn, 2, owner="c")
        assert len(refill.claimed) == 1 and refill.retry_at_ms is not None  # one slot only

        # A failure at the cap frees a slot too.
        failed = second.claimed[0]
        reply = await transitions.fail(conn, failed.task.id, failed.token, "boom", settings)
        assert reply[0] == "retrying"
        assert await next_message(messages) == {"queue": "default", "event": "slot"}
        # Below the cap nobody waits for room: a requeue (or any end) says nothing.
        handed_back = refill.claimed[0]
        assert (
            await transitions.requeue(conn, handed_back.task.id, handed_back.token, "bye") == "ok"
        )
        await assert_silent(conn, messages)
    assert await counts(conn) == {"total": 5, "completed": 1, "pending": 3, "retrying": 1}
    await assert_consistent(conn)


async def test_a_requeue_at_the_cap_announces_a_slot(conn: Conn, settings: Settings) -> None:
    await limit(conn, max_concurrency=1)
    await seed_tasks(conn, settings, count=2)
    [held] = (await claim(conn, 2)).claimed
    async with control_messages(conn) as messages:
        assert await transitions.requeue(conn, held.task.id, held.token, "bye") == "ok"
        assert await next_message(messages) == {"queue": "default", "event": "slot"}
    await assert_consistent(conn)


async def test_hand_over_stops_at_the_cap_and_withdraws_the_offers_left(
    conn: Conn, settings: Settings
) -> None:
    k = conn.keys
    await limit(conn, max_concurrency=3)
    [ready] = await seed_tasks(conn, settings)
    reply = await claim(conn, 5)
    # Room for three, one ready: the lists ran dry before the cap, so the rest is offered.
    assert [c.task.id for c in reply.claimed] == [ready.id]
    assert reply.offered == 4 and reply.retry_at_ms is None
    async with control_messages(conn) as messages:
        tasks = await seed_tasks(conn, settings, count=3)  # one batch: make_ready_many
        assert await next_message(messages) == {
            "queue": "default",
            "event": "offers",
            "lane": "work",
        }
    assert await inbox(conn) == [t.id for t in tasks[:2]]  # up to the cap of three
    assert await conn.redis.lrange(k.ready("work", tasks[2].priority), 0, -1) == [tasks[2].id]
    assert await conn.redis.llen(k.idle("work")) == 0  # no offer may jump the ready one
    assert (await counts(conn))["processing"] == 3
    again = await claim(conn, 0)  # the consumer, told to, re-syncs: nothing offered now
    assert (again.withdrawn, again.offered, again.waiting) == (0, 0, 2)
    await assert_consistent(conn)


async def test_hand_over_takes_a_rate_token_and_none_without_one(
    conn: Conn, settings: Settings
) -> None:
    k = conn.keys
    await limit(conn, rate_limit={"tasks": 2, "per_seconds": 60})
    reply = await claim(conn, 5)
    assert reply.offered == 5 and reply.retry_at_ms is None
    due = datetime.now(UTC) + timedelta(seconds=1)
    tasks = await seed_tasks(conn, settings, count=3, scheduled_for=due)
    async with control_messages(conn) as messages:
        assert await transitions.promote_due(conn, lead_seconds=2) == (3, None)
        assert await next_message(messages) == {
            "queue": "default",
            "event": "offers",
            "lane": "work",
        }
    # Due at the same time, they are promoted in id order: one token, one hand-over.
    promoted = sorted(t.id for t in tasks)
    assert await inbox(conn) == promoted[:1]
    assert await conn.redis.lrange(k.ready("work", tasks[0].priority), 0, -1) == promoted[1:]
    now = await server_now(conn)
    reply = await claim(conn, 3)
    # The token is spent by the hand-over: the next is due one interval (30 s) on.
    assert reply.claimed == [] and reply.retry_at_ms is not None
    assert now + 29_000 < reply.retry_at_ms <= now + 30_001
    await assert_consistent(conn)


async def test_controls_of_one_queue_leave_another_alone(conn: Conn, settings: Settings) -> None:
    media = conn.queue("media")
    await queue_control.set_limits(conn, "media", QueueLimits(max_concurrency=1))
    assert await conn.redis.hgetall(media.config) == {"max_concurrency": "1"}
    await seed_tasks(conn, settings, count=2, queue="media")
    await seed_tasks(conn, settings, count=2)
    held = await claim(conn, 2, queue="media")
    assert len(held.claimed) == 1 and held.retry_at_ms is not None
    assert len((await claim(conn, 2)).claimed) == 2  # the default queue has no cap
    async with control_messages(conn) as messages:
        [item] = held.claimed
        code = await transitions.complete(
            conn, item.task.id, item.token, 1, settings, queue="media"
        )
        assert code == "ok"
        assert await next_message(messages) == {"queue": "media", "event": "slot"}
    assert len((await claim(conn, 2, queue="media")).claimed) == 1


async def test_the_lua_channel_is_the_python_one() -> None:
    from pathlib import Path

    lib = (Path(__file__).parents[3] / "shared" / "scripts" / "_lib.lua").read_text()
    assert f"local QUEUE_CONTROL_CHANNEL = '{QUEUE_CONTROL_CHANNEL}'" in lib
