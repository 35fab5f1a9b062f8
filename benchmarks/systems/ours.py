"""Ours: the benchmark's task types (loaded by workers with TASK_MODULES) and its producer.

Workers run `python -m services.worker` with TASK_MODULES=benchmarks.systems.ours; the
producer side uses the Python producer API (`shared.producer.Producer`).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from benchmarks.systems.common import (
    BODY_CLIENT_OPTIONS,
    ENGINE_URL,
    REDIS_URL,
    RESULTS_KEY,
    result_line,
)
from shared.registry import TaskContext, task

_client: aioredis.Redis | None = None


def _redis() -> aioredis.Redis:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(
            os.environ.get("BENCH_REDIS_URL", REDIS_URL), **BODY_CLIENT_OPTIONS
        )
    return _client


@task("bench.noop", description="benchmark no-op: one RPUSH of its start time")
async def noop(payload: Any, ctx: TaskContext) -> None:
    await _redis().rpush(RESULTS_KEY, result_line(payload))


@task("bench.hang", description="benchmark: reports its start, then hangs (worker-kill test)")
async def hang(payload: Any, ctx: TaskContext) -> None:
    await _redis().rpush(RESULTS_KEY, result_line(payload))
    await asyncio.sleep(3600)


# -- producer side (run as: python -m benchmarks.systems.ours <command>) --------------------

_producer: Any = None


async def setup() -> None:
    from shared.producer import Producer
    from shared.settings import Settings

    global _producer
    settings = Settings(redis_url=ENGINE_URL)
    _producer = await Producer.from_settings(settings).start()


async def teardown() -> None:
    await _producer.aclose()


async def enqueue_one(arg: float) -> None:
    await _producer.enqueue("bench.noop", arg)


async def enqueue_bulk(args: list[float]) -> None:
    await _producer.enqueue_many([{"type": "bench.noop", "payload": a} for a in args])


async def enqueue_at(arg: float, due: float) -> None:
    when = datetime.fromtimestamp(due, tz=UTC)
    await _producer.enqueue("bench.noop", arg, scheduled_for=when)
