"""Taskiq: ListQueueBroker from taskiq-redis, `taskiq worker --workers N --max-async-tasks C`.

Scheduled tasks go through a ListRedisScheduleSource and the `taskiq scheduler` process
(started with --update-interval 1: with its default of 60 s a task due in 3 s is not even
seen before the next minute).
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis
from taskiq import TaskiqScheduler
from taskiq_redis import ListQueueBroker, ListRedisScheduleSource

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

broker = ListQueueBroker(url=REDIS_URL)
source = ListRedisScheduleSource(url=REDIS_URL)
scheduler = TaskiqScheduler(broker=broker, sources=[source])
_client: aioredis.Redis | None = None


@broker.task(task_name="noop")
async def noop(arg: float) -> None:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)
    await _client.rpush(RESULTS_KEY, result_line(arg))


async def setup() -> None:
    await broker.startup()
    await source.startup()


async def teardown() -> None:
    await source.shutdown()
    await broker.shutdown()


async def enqueue_one(arg: float) -> None:
    await noop.kiq(arg)


async def enqueue_at(arg: float, due: float) -> None:
    await noop.schedule_by_time(source, datetime.fromtimestamp(due, tz=UTC), arg)
