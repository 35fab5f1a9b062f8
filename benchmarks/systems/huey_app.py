"""Huey: RedisHuey with a thread pool consumer (`huey_consumer ... -k thread -w N`)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from huey import RedisHuey

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

huey = RedisHuey("bench", url=REDIS_URL)
_client = redis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)


@huey.task()
def noop(arg: float) -> None:
    _client.rpush(RESULTS_KEY, result_line(arg))


def enqueue_one(arg: float) -> None:
    noop(arg)


def enqueue_at(arg: float, due: float) -> None:
    noop.schedule(args=(arg,), eta=datetime.fromtimestamp(due, tz=UTC))
