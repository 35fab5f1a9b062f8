"""RQ: SimpleWorkers (`rq worker --worker-class rq.worker.SimpleWorker --with-scheduler`)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

_client = redis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)
queue = Queue("bench", connection=_client)


def noop(arg: float) -> None:
    _client.rpush(RESULTS_KEY, result_line(arg))


def enqueue_one(arg: float) -> None:
    queue.enqueue(noop, arg)


def enqueue_bulk(args: list[float]) -> None:
    queue.enqueue_many([Queue.prepare_data(noop, (a,)) for a in args])


def enqueue_at(arg: float, due: float) -> None:
    queue.enqueue_at(datetime.fromtimestamp(due, tz=UTC), noop, arg)
