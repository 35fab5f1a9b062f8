"""Heartbeat entries of instances that died without `leave` do not stay for ever.

Workers and notifiers are forgotten by recovery once their tasks are back; schedulers,
dashboards and api instances hold no tasks, so the scheduler's retention pass prunes them.
"""

from __future__ import annotations

import asyncio

from services.scheduler.retention import prune_heartbeats
from services.scheduler.runner import run_scheduler
from shared import codec, heartbeats
from shared.redis import Conn
from shared.settings import Settings
from tests.support.waiting import wait_until

PRUNED_SERVICES = ("scheduler", "dashboard", "api")
LONG_DEAD_SECONDS = 7 * 24 * 3600  # far past any grace


async def _seed_beat(conn: Conn, service: str, instance: str, age_seconds: float) -> None:
    """An entry as `beat` leaves it, last stamped `age_seconds` ago."""
    await heartbeats.beat(conn, service, instance, {"pid": 1}, ttl_seconds=3600)
    stamp = codec.now_ms() - int(age_seconds * 1000)
    await conn.redis.zadd(conn.keys.heartbeats(service), {instance: stamp})


async def test_scheduler_prunes_crashed_schedulers_dashboards_and_apis(
    conn: Conn, settings: Settings
) -> None:
    for service in PRUNED_SERVICES:
        await _seed_beat(conn, service, f"{service}-crashed", LONG_DEAD_SECONDS)
        # Dead by DEAD_AFTER_SECONDS, but within the grace: left alone for now.
        await _seed_beat(conn, service, f"{service}-late", settings.dead_after_seconds * 5)

    async def crashed_gone() -> bool:
        for service in PRUNED_SERVICES:
            key = conn.keys.heartbeats(service)
            if await conn.redis.zscore(key, f"{service}-crashed") is not None:
                return False
        return True

    stop = asyncio.Event()
    scheduler = asyncio.create_task(run_scheduler(conn, settings, stop))
    try:
        await wait_until(crashed_gone, timeout=5, message="crashed instances pruned")
    finally:
        stop.set()
        await scheduler

    for service in PRUNED_SERVICES:
        key = conn.keys.heartbeats(service)
        assert await conn.redis.zrange(key, 0, -1) == [f"{service}-late"]
        assert not await conn.redis.exists(conn.keys.instance(service, f"{service}-crashed"))
        assert await conn.redis.exists(conn.keys.instance(service, f"{service}-late"))


async def test_prune_leaves_consumers_to_recovery(conn: Conn, settings: Settings) -> None:
    """A dead worker's entry is how recovery finds its tasks: pruning never takes it first."""
    await _seed_beat(conn, "worker", "worker-crashed", LONG_DEAD_SECONDS)
    await conn.redis.sadd(conn.keys.held("worker-crashed"), "some-task")
    await prune_heartbeats(conn, settings)
    assert await conn.redis.zscore(conn.keys.heartbeats("worker"), "worker-crashed") is not None
    assert await conn.redis.smembers(conn.keys.held("worker-crashed")) == {"some-task"}


async def test_instance_info_keys_expire_on_their_own(conn: Conn, settings: Settings) -> None:
    """The per-instance info key carries a TTL, so a crashed instance's info goes by itself."""
    for service in heartbeats.SERVICES:
        await heartbeats.beat(conn, service, f"{service}-1", {"pid": 1}, ttl_seconds=5)
        ttl_ms = await conn.redis.pttl(conn.keys.instance(service, f"{service}-1"))
        assert 0 < ttl_ms <= 5000, (service, ttl_ms)
