"""Dramatiq: RedisBroker, `dramatiq ... --processes N --threads C`."""

from __future__ import annotations

import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

broker = RedisBroker(url=REDIS_URL)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)


@dramatiq.actor(max_retries=0)
def noop(arg: float) -> None:
    _client.rpush(RESULTS_KEY, result_line(arg))


def enqueue_one(arg: float) -> None:
    noop.send(arg)


def enqueue_at(arg: float, due: float) -> None:
    noop.send_with_options(args=(arg,), delay=max(0, int((due - time.time()) * 1000)))
