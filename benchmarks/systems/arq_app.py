"""arq: `arq benchmarks.systems.arq_app.WorkerSettings` (max_jobs C per process)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from arq import create_pool
from arq.connections import RedisSettings

from benchmarks.systems.common import BODY_CLIENT_OPTIONS, REDIS_URL, RESULTS_KEY, result_line

_settings = RedisSettings.from_dsn(REDIS_URL)
_client: aioredis.Redis | None = None
_pool: Any = None


async def noop(ctx: Any, arg: float) -> None:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(REDIS_URL, **BODY_CLIENT_OPTIONS)
    await _client.rpush(RESULTS_KEY, result_line(arg))


class WorkerSettings:
    functions = [noop]
    redis_settings = _settings
    max_jobs = int(os.environ.get("ARQ_MAX_JOBS", "50"))


async def setup() -> None:
    global _pool
    _pool = await create_pool(_settings)


async def teardown() -> None:
    await _pool.aclose()


async def enqueue_one(arg: float) -> None:
    await _pool.enqueue_job("noop", arg)


async def enqueue_at(arg: float, due: float) -> None:
    await _pool.enqueue_job("noop", arg, _defer_until=datetime.fromtimestamp(due, tz=UTC))
