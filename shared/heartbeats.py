"""Service liveness: each instance beats into a ZSET; health and worker_count read it.

Beats are stamped and judged with Redis's clock (`Conn.server_ms`), never a host's own, so
clock skew between hosts neither kills a live instance nor keeps a dead one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from shared import codec
from shared.keys import LANES
from shared.redis import Conn, guarded

SERVICES = ("api", "worker", "scheduler", "notifier", "dashboard")


async def beat(
    conn: Conn, service: str, instance_id: str, info: dict[str, Any], ttl_seconds: float
) -> None:
    """Record that an instance is alive, with what it is doing (one MULTI round trip)."""
    k = conn.keys
    now = await conn.server_ms()
    async with conn.redis.pipeline(transaction=True) as pipe:
        pipe.zadd(k.heartbeats(service), {instance_id: now})
        pipe.set(k.instance(service, instance_id), codec.dumps(info), px=int(ttl_seconds * 1000))
        await guarded(pipe.execute())


async def leave(conn: Conn, service: str, instance_id: str) -> None:
    """Remove an instance on clean shutdown, so it stops counting at once."""
    k = conn.keys
    async with conn.redis.pipeline(transaction=True) as pipe:
        pipe.zrem(k.heartbeats(service), instance_id)
        pipe.delete(k.instance(service, instance_id))
        await guarded(pipe.execute())


async def live_counts(conn: Conn, dead_after_seconds: float) -> dict[str, int]:
    """Live instances per service, counted by recent heartbeats."""
    since = await conn.server_ms() - int(dead_after_seconds * 1000)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for service in SERVICES:
            pipe.zcount(conn.keys.heartbeats(service), since, "+inf")
        replies = await guarded(pipe.execute())
    return {service: int(n) for service, n in zip(SERVICES, replies, strict=True)}


async def instances(conn: Conn, service: str, dead_after_seconds: float) -> list[dict[str, Any]]:
    """Live instances of a service with their last beat and info (current tasks, pid, host)."""
    k = conn.keys
    since = await conn.server_ms() - int(dead_after_seconds * 1000)
    members = cast(
        "list[tuple[str, float]]",
        await guarded(
            conn.redis.zrangebyscore(k.heartbeats(service), since, "+inf", withscores=True)
        ),
    )
    if not members:
        return []
    infos = await guarded(conn.redis.mget([k.instance(service, iid) for iid, _ in members]))
    result = []
    for (iid, last_ms), raw in zip(members, infos, strict=True):
        info = codec.loads(raw) if raw else {}
        result.append({"instance_id": iid, "last_beat_ms": int(last_ms), **info})
    return result


async def dead_instances(conn: Conn, service: str, dead_after_seconds: float) -> Sequence[str]:
    """Instances whose last beat is older than `dead_after_seconds` (candidates for recovery)."""
    before = await conn.server_ms() - int(dead_after_seconds * 1000)
    key = conn.keys.heartbeats(service)
    return cast("list[str]", await guarded(conn.redis.zrangebyscore(key, "-inf", f"({before}")))


async def forget(
    conn: Conn, service: str, instance_id: str, queues: Sequence[str] | None = None
) -> None:
    """Drop a dead instance once its tasks (in `queues`, default QUEUE_NAME) are recovered."""
    async with conn.redis.pipeline(transaction=False) as pipe:
        pipe.zrem(conn.keys.heartbeats(service), instance_id)
        for name in queues or [conn.keys.queue]:
            k = conn.queue(name)
            pipe.delete(k.held(instance_id), k.inbox(instance_id))
        await guarded(pipe.execute())


async def withdraw_offers(
    conn: Conn,
    instance_id: str,
    *,
    seal_inbox: bool = False,
    queues: Sequence[str] | None = None,
) -> None:
    """Take back every hand-over offer of an instance (Keys.idle) in `queues` (default
    QUEUE_NAME), so no task is handed to it any more: on shutdown, and before the tasks of a
    dead one are recovered. With `seal_inbox` an empty message goes last into each inbox,
    so its reader knows that everything before it is all it will get."""
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in queues or [conn.keys.queue]:
            k = conn.queue(name)
            for lane in LANES:
                pipe.lrem(k.idle(lane), 0, instance_id)
                pipe.hdel(k.offers(lane), instance_id)
            if seal_inbox:
                pipe.rpush(k.inbox(instance_id), "")
        await guarded(pipe.execute())


async def withdraw_one_offer(
    conn: Conn, instance_id: str, lane: str, queues: Sequence[str]
) -> list[int]:
    """Take back one hand-over offer of an instance in each of `queues` (one round trip);
    returns how many each gave back (0 where it was used meanwhile)."""
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.lrem(conn.queue(name).idle(lane), 1, instance_id)
        return [int(n) for n in await guarded(pipe.execute())]


async def held_tasks(conn: Conn, instance_id: str, *, queue: str | None = None) -> list[str]:
    key = conn.queue(queue).held(instance_id)
    return sorted(cast("set[str]", await guarded(conn.redis.smembers(key))))


async def take_inbox(conn: Conn, instance_id: str, *, queue: str | None = None) -> list[str]:
    """Empty an instance's inbox (tasks handed over to it, not yet read) in one atomic step
    and return the messages: a consumer that reads it in the same instant gets nothing, so
    each handed-over task is either started by it or taken back here, never both."""
    key = conn.queue(queue).inbox(instance_id)
    async with conn.redis.pipeline(transaction=True) as pipe:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        messages, _ = await guarded(pipe.execute())
    return cast("list[str]", messages)


async def prune_dead(conn: Conn, service: str, dead_after_seconds: float) -> list[str]:
    """Drop the entries (and info keys) of instances silent for `dead_after_seconds`, for
    services holding no tasks; workers and notifiers are left to recovery's `forget`.
    A live instance pruned in a race is back at its next beat. Returns the ids dropped."""
    dead = list(await dead_instances(conn, service, dead_after_seconds))
    if dead:
        k = conn.keys
        async with conn.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(k.heartbeats(service), *dead)
            pipe.delete(*(k.instance(service, iid) for iid in dead))
            await guarded(pipe.execute())
    return dead


async def check_reachable(conn: Conn) -> None:
    """RedisUnavailable unless the Redis holding the heartbeats answers (on a cluster, the
    {_global} slot's shard; a PING would ask whichever node the client defaults to)."""
    await guarded(conn.redis.exists(conn.keys.heartbeats("worker")))
