"""The registry of named queues (SPEC section 9), and finding the queue a task id lives in.

A queue exists once a task was created in it: the create path registers its name in a global
SET before its first task is written (so a queue with tasks is always known), once per
process. The default queue (QUEUE_NAME) is always known, so data written before queues
existed is found without any migration.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

from shared.errors import RedisUnavailable
from shared.keys import QUEUES, Keys
from shared.redis import Conn, guarded

REGISTER_AGAIN_SECONDS = 60.0
LOCATED_CACHE = 10_000  # task id -> queue answers remembered per process (a task never moves)
_located: OrderedDict[str, str] = OrderedDict()


def registered_here(conn: Conn, queue: str) -> bool:
    """Whether this process registered `queue` (the registry then holds it)."""
    return queue in conn._registered


async def register(conn: Conn, queue: str) -> None:
    """Make `queue` known to every service: one SADD per queue and process every
    REGISTER_AGAIN_SECONDS (so a registry lost to a flush is written again), else nothing."""
    now = time.monotonic()
    if now - conn._registered.get(queue, float("-inf")) > REGISTER_AGAIN_SECONDS:
        await guarded(conn.redis.sadd(QUEUES, queue))
        conn._registered[queue] = now


async def known(conn: Conn) -> list[str]:
    """Every queue there is, sorted; the default queue always among them.

    While the registry cannot be read (on Redis Cluster its slot is one shard's, which may be
    failing over or down) the last list read is used, so the other shards' queues keep being
    served; RedisUnavailable only when there is none yet."""
    try:
        names = cast("set[str]", await guarded(conn.redis.smembers(QUEUES)))
    except RedisUnavailable:
        if conn._known_queues is None:
            raise
        return list(conn._known_queues)
    conn._known_queues = sorted({*names, conn.keys.queue})
    return list(conn._known_queues)


async def reachable(conn: Conn, queue: str) -> bool:
    """Whether the queue's Redis (on a cluster, its shard) answers now: one EXISTS."""
    try:
        await guarded(conn.redis.exists(conn.queue(queue).counts))
    except RedisUnavailable:
        return False
    return True


async def locate(conn: Conn, task_id: str, queues: Sequence[str] | None = None) -> Keys:
    """The keys of the queue holding task `task_id`. With one queue, no round trip; with
    several, one pipelined EXISTS per queue (then remembered). An unknown id gets the
    default queue's keys, whose read then says the task is not there."""
    cached = _located.get(task_id)
    if cached is not None:
        return conn.queue(cached)
    names = list(queues) if queues is not None else await known(conn)
    if len(names) <= 1:
        return conn.queue(names[0] if names else None)
    found: list[Any]
    if conn.topology == "cluster":
        # One call per queue, one after the other: a shard that is down answers for its own
        # queues only, and the task may well live on a shard that is up. (Side by side, the
        # failed call's topology refresh in redis-py breaks the calls to healthy nodes too.)
        found = []
        for name in names:
            try:
                found.append(await guarded(conn.redis.exists(conn.queue(name).task(task_id))))
            except RedisUnavailable as exc:
                found.append(exc)
                continue
            if found[-1]:
                break
    else:
        async with conn.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(conn.queue(name).task(task_id))
            found = await guarded(pipe.execute())
    for name, exists in zip(names, found, strict=False):
        if exists is True or (isinstance(exists, int) and exists > 0):
            remember(task_id, name)
            return conn.queue(name)
    unreachable = [error for error in found if isinstance(error, BaseException)]
    if unreachable:  # not in any queue that answered: it may be in one that did not
        raise unreachable[0]
    return conn.keys


def remember(task_id: str, queue: str) -> None:
    """Note where a task lives (creates know it already)."""
    _located[task_id] = queue
    _located.move_to_end(task_id)
    while len(_located) > LOCATED_CACHE:
        _located.popitem(last=False)


LOCATE_CHUNK = 1000  # EXISTS per pipelined round trip in locate_many


async def locate_many(conn: Conn, task_ids: Sequence[str]) -> dict[str, list[str]]:
    """Group task ids by the queue that holds them ({queue: ids}, in the given order); ids no
    queue holds are under "" . With one queue, no round trip (its scripts then say which ids
    are missing); with several, pipelined EXISTS per queue, the ids not found yet only, so
    each queue costs one round trip per LOCATE_CHUNK ids."""
    names = await known(conn)
    if len(names) <= 1:
        return {names[0] if names else conn.keys.queue: list(task_ids)}
    found: dict[str, str] = {}
    todo: list[str] = []
    for task_id in task_ids:
        cached = _located.get(task_id)
        if cached is None:
            todo.append(task_id)
        else:
            found[task_id] = cached
    for name in names:
        if not todo:
            break
        k, left = conn.queue(name), []
        for first in range(0, len(todo), LOCATE_CHUNK):
            chunk = todo[first : first + LOCATE_CHUNK]
            async with conn.redis.pipeline(transaction=False) as pipe:
                for task_id in chunk:
                    pipe.exists(k.task(task_id))
                replies = await guarded(pipe.execute())
            for task_id, exists in zip(chunk, replies, strict=True):
                if exists:
                    found[task_id] = name
                    remember(task_id, name)
                else:
                    left.append(task_id)
        todo = left
    groups: dict[str, list[str]] = {}
    for task_id in task_ids:
        groups.setdefault(found.get(task_id, ""), []).append(task_id)
    return groups
