"""Celery: Redis broker, no result backend, `celery worker --pool threads --concurrency C`."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from celery import Celery

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

app = Celery("bench", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
_client = redis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)


@app.task(name="noop")
def noop(arg: float) -> None:
    _client.rpush(RESULTS_KEY, result_line(arg))


def enqueue_one(arg: float) -> None:
    noop.delay(arg)


def enqueue_at(arg: float, due: float) -> None:
    noop.apply_async((arg,), eta=datetime.fromtimestamp(due, tz=UTC))
