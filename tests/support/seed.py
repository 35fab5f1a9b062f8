"""Builders and inspectors for tests that drive transitions against a real Redis."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared import transitions
from shared.models import Task, TaskCreate
from shared.redis import Conn
from shared.registry import TaskType, register
from shared.settings import Settings

STATUSES = (
    "scheduled",
    "pending",
    "processing",
    "completed",
    "retrying",
    "failed",
    "cancelled",
    "waiting",
)


def ensure_test_types() -> None:
    """Register the built-ins plus `noop` (a worker task type used across tests)."""
    import shared.builtin_tasks  # noqa: F401

    register(TaskType("noop", handler=lambda payload, ctx: payload))


def create(type: str = "noop", payload: Any = None, **fields: Any) -> TaskCreate:
    return TaskCreate(type=type, payload=payload if payload is not None else {"n": 1}, **fields)


async def seed_tasks(conn: Conn, settings: Settings, count: int = 1, **fields: Any) -> list[Task]:
    ensure_test_types()
    tasks, _ = await transitions.enqueue(conn, [create(**fields) for _ in range(count)], settings)
    return tasks


async def counts(conn: Conn, *, queue: str | None = None) -> dict[str, int]:
    raw = await conn.redis.hgetall(conn.queue(queue).counts)
    return {name: int(value) for name, value in raw.items() if int(value) != 0}


async def assert_consistent(conn: Conn, *, queue: str | None = None) -> dict[str, int]:
    """The counters of a queue add up, and each status index holds exactly the ids in that
    status."""
    k = conn.queue(queue)
    recorded = await counts(conn, queue=queue)
    ids = await conn.redis.zrange(k.index_all, 0, -1)
    statuses: Counter[str] = Counter()
    for task_id in ids:
        status = await conn.redis.hget(k.task(task_id), "status")
        assert status is not None, f"index:all holds {task_id} without a record"
        statuses[status] += 1
        assert await conn.redis.zscore(k.index_status(status), task_id) is not None
    assert recorded.get("total", 0) == len(ids) == sum(statuses.values())
    for status in STATUSES:
        assert recorded.get(status, 0) == statuses[status], (status, recorded, statuses)
        assert await conn.redis.zcard(k.index_status(status)) == statuses[status], status
    ready = 0
    for lane in ("work", "notify"):
        in_lane: list[str] = []
        for key in k.ready_all(lane):
            # Cancelled ids wait in their list, counted as skipped, until a claim drops them.
            skipped = int(await conn.redis.hget(k.ready_skips, key) or 0)
            assert 0 <= skipped <= await conn.redis.llen(key), (key, skipped)
            ready += await conn.redis.llen(key) - skipped
            in_lane += await conn.redis.lrange(key, 0, -1)
        # Offers exist only while nothing ready is of a type their consumer runs: a hand-over
        # never jumps a queue.
        ready_types = {
            await conn.redis.hget(k.task(task_id), "type")
            for task_id in in_lane
            if await conn.redis.hget(k.task(task_id), "status") == "pending"
        }
        for owner in set(await conn.redis.lrange(k.idle(lane), 0, -1)):
            offer = await conn.redis.hget(k.offers(lane), owner)
            runs = set(offer.split("|")[1].split(",")) if offer else set()
            assert "*" not in runs or not ready_types, (lane, owner, ready_types)
            assert not runs & ready_types, (lane, owner, runs & ready_types)
    # Parked lists (claim.lua): their directory counts exactly what each holds.
    for member, n in (await conn.redis.hgetall(k.parked_lists)).items():
        lane, priority, task_type = member.split(":", 2)
        key = k.parked(lane, priority, task_type)
        assert await conn.redis.llen(key) == int(n), (member, n)
        skipped = int(await conn.redis.hget(k.ready_skips, key) or 0)
        assert 0 <= skipped <= int(n), (key, skipped)
        ready += int(n) - skipped
    assert ready == statuses["pending"], (ready, statuses)
    assert await conn.redis.zcard(k.delayed) == statuses["scheduled"] + statuses["retrying"]
    assert await conn.redis.zcard(k.leases) == statuses["processing"]
    return recorded
