"""SAQ: a Redis Queue, `saq benchmarks.systems.saq_app.settings --workers N` (concurrency C)."""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis
from saq import Queue

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

queue = Queue.from_url(REDIS_URL, name="bench")
_client: aioredis.Redis | None = None


async def noop(ctx: Any, *, arg: float) -> None:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)
    await _client.rpush(RESULTS_KEY, result_line(arg))


settings = {
    "queue": queue,
    "functions": [noop],
    "concurrency": int(os.environ.get("SAQ_CONCURRENCY", "50")),
}


async def setup() -> None:
    connect = getattr(queue, "connect", None)
    if connect is not None:
        await connect()


async def teardown() -> None:
    await queue.disconnect()


async def enqueue_one(arg: float) -> None:
    await queue.enqueue("noop", arg=arg)


async def enqueue_at(arg: float, due: float) -> None:
    await queue.enqueue("noop", arg=arg, scheduled=due)
