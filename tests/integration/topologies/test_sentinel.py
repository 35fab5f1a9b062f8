"""The project on a real Sentinel setup (a primary, a replica, three sentinels on loopback):
REDIS_URL=redis+sentinel://..., REDIS_WAIT_REPLICAS, and a worker riding a failover."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import queries, schedules, transitions
from shared.errors import ReplicationTimeout
from shared.producer import Producer
from shared.redis import Conn, create_redis
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.redis_sentinel import SentinelSetup, run_sentinel
from tests.support.seed import assert_consistent, create, ensure_test_types
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[SentinelSetup]:
    with run_sentinel() as setup:
        yield setup


@pytest.fixture
def sentinel_settings(sentinel_setup: SentinelSetup) -> Settings:
    sentinel_setup.primary.command("FLUSHALL")
    return make_settings(sentinel_setup.url)


@pytest.fixture
async def sentinel_conn(sentinel_settings: Settings) -> AsyncIterator[Conn]:
    conn = create_redis(sentinel_settings)
    await conn.load_scripts()
    yield conn
    await conn.aclose()


async def noop(payload: Any, ctx: Any) -> str:
    return "done"


async def test_a_sentinel_url_reaches_the_primary_sentinel_names(
    sentinel_conn: Conn, sentinel_settings: Settings, sentinel_setup: SentinelSetup
) -> None:
    assert sentinel_conn.topology == "sentinel" and sentinel_conn.use_functions
    ensure_test_types()
    [task], _ = await transitions.enqueue(sentinel_conn, [create()], sentinel_settings)
    # Written on the primary (and replicated): the replica serves it read-only.
    key = sentinel_conn.keys.task(task.id)
    assert sentinel_setup.primary.command("HGET", key, "status") == "pending"
    await wait_until(
        lambda: sentinel_setup.replica.command("HGET", key, "status") == "pending",
        message="replicated",
    )
    async with running(sentinel_conn, sentinel_settings, {"noop": noop}):
        await wait_until(status_is(sentinel_conn, task.id, "completed"), message="completed")


def keyed_create(api: TestClient, payload: object, key: str) -> Any:
    """POST /api/tasks of a noop with an Idempotency-Key: the response."""
    return api.post(
        "/api/tasks", json={"type": "noop", "payload": payload}, headers={"Idempotency-Key": key}
    )


async def test_wait_replicas_acknowledges_only_what_a_replica_holds(
    sentinel_setup: SentinelSetup, sentinel_settings: Settings
) -> None:
    """REDIS_WAIT_REPLICAS=1: 201 once the replica holds the task; with the replica gone, a
    503 with Retry-After (the task is on the primary, not acknowledged), and the client's
    retry with the same Idempotency-Key, once the replica is back, gets that same task."""
    ensure_test_types()
    settings = sentinel_settings.model_copy(
        update={"redis_wait_replicas": 1, "redis_wait_timeout_ms": 300}
    )
    with TestClient(create_app(settings)) as api:
        created = api.post("/api/tasks", json={"type": "noop", "payload": 1})
        assert created.status_code == 201
        replica = sentinel_setup.replica
        sentinel_setup.replica.process.kill()
        replica.process.wait()
        try:
            refused = keyed_create(api, 2, "order-2")
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert "0 of 1 replicas" in refused.json()["error"]
            # The batch route and the producer ask for the same acknowledgement.
            batch = api.post("/api/tasks/batch", json={"tasks": [{"type": "noop", "payload": 3}]})
            assert batch.status_code == 503
            async with Producer(create_redis(settings), settings, owns_conn=True) as producer:
                with pytest.raises(ReplicationTimeout):
                    await producer.enqueue("noop", 4)
        finally:
            sentinel_setup.restart(replica)
        again = keyed_create(api, 2, "order-2")
        assert again.status_code in (200, 201)
        assert again.json()["payload"] == 2
    # One task per create that reached the primary, nothing half-written.
    conn = create_redis(sentinel_settings)
    try:
        await conn.load_scripts()
        stats = await queries.get_stats(conn, dead_after_seconds=30)
        assert stats.total_tasks == 4 and stats.pending_count == 4
        await assert_consistent(conn)
    finally:
        await conn.aclose()


async def test_a_replayed_or_repeated_create_waits_for_the_replica_too(
    sentinel_setup: SentinelSetup, sentinel_settings: Settings
) -> None:
    """A create answered from its Idempotency-Key (or found already written, after a resend)
    writes nothing new, yet it vouches for the first create. With the replica connected but
    stalled, that first create reached no replica: a replay through another API process,
    whose connections' own writes the replica does hold, is a 503 too, not a 200. (Redis sets
    a connection's WAIT offset to the primary's after every command, so the script call that
    found the key makes WAIT cover the first create.)"""
    ensure_test_types()
    settings = sentinel_settings.model_copy(
        update={"redis_wait_replicas": 1, "redis_wait_timeout_ms": 300}
    )
    replica = sentinel_setup.replica.process
    task = create()
    writer, resender = create_redis(settings), create_redis(settings)
    with TestClient(create_app(settings)) as first_api, TestClient(create_app(settings)) as api:
        # Both processes and the resender have written, and the replica holds it all.
        for client in (first_api, api):
            assert client.post("/api/tasks", json={"type": "noop", "payload": 0}).status_code == 201
        await transitions.enqueue(resender, [create()], settings)
        replica.send_signal(signal.SIGSTOP)  # still connected, acknowledging nothing more
        try:
            first = keyed_create(first_api, 1, "stalled-1")
            assert first.status_code == 503
            replayed = keyed_create(api, 1, "stalled-1")
            assert replayed.status_code == 503, replayed.text
            assert "0 of 1 replicas" in replayed.json()["error"]
            # The same create sent again on another connection (a resend after a reset):
            # its id already exists.
            with pytest.raises(ReplicationTimeout):
                await transitions.enqueue(writer, [task], settings)
            with pytest.raises(ReplicationTimeout):
                await transitions.enqueue(resender, [task], settings)
        finally:
            replica.send_signal(signal.SIGCONT)
            await writer.aclose()
            await resender.aclose()
        replayed = keyed_create(api, 1, "stalled-1")
        assert replayed.status_code == 200 and replayed.json()["payload"] == 1


async def test_a_schedule_tick_is_advanced_only_once_the_replica_holds_its_task(
    sentinel_setup: SentinelSetup, sentinel_settings: Settings
) -> None:
    """With REDIS_WAIT_REPLICAS, a tick's task is a create like any other: while the replica
    confirms nothing, the tick is not advanced (a failover then would lose the task while
    the schedule said it fired). Once the replica is back, the next pass advances it, and
    the tick's fence gives the task it made the first time: still one task per tick."""
    ensure_test_types()
    settings = sentinel_settings.model_copy(
        update={"redis_wait_replicas": 1, "redis_wait_timeout_ms": 300}
    )
    conn = create_redis(settings)
    replica = sentinel_setup.replica.process
    t0 = 1_900_000_000_000
    try:
        await conn.load_scripts()
        body = schedules.ScheduleBody.model_validate(
            {"task": {"type": "noop", "payload": 1, "queue": "ticks"}, "interval_seconds": 1}
        )
        await schedules.put(conn, "beat", body, settings, now_ms=t0)
        replica.send_signal(signal.SIGSTOP)
        try:
            # Every tick of the pass unconfirmed: the scheduler's loop backs off and retries.
            with pytest.raises(ReplicationTimeout):
                await schedules.fire_due(conn, now_ms=t0 + 1000)
        finally:
            replica.send_signal(signal.SIGCONT)
        assert (await schedules.get(conn, "beat")).last_task_id is None
        assert await conn.redis.zcard(conn.queue("ticks").index_all) == 1  # made, not promised
        again = await schedules.fire_due(conn, now_ms=t0 + 1100)
        assert (again.fired, again.created) == (1, 0)  # the same task, found by its fence
        ids = await conn.redis.zrange(conn.queue("ticks").index_all, 0, -1)
        assert len(ids) == 1
        assert (await schedules.get(conn, "beat")).last_task_id == ids[0]
    finally:
        await conn.aclose()


async def test_a_worker_and_a_producer_ride_a_failover_without_a_restart(
    sentinel_setup: SentinelSetup, sentinel_conn: Conn, sentinel_settings: Settings
) -> None:
    ensure_test_types()
    settings = sentinel_settings.model_copy(update={"redis_wait_replicas": 1})
    async with (
        running(sentinel_conn, settings, {"noop": noop}, concurrency=2),
        Producer(create_redis(settings), settings, owns_conn=True) as producer,
    ):
        before = await producer.enqueue("noop", "before")
        await wait_until(status_is(sentinel_conn, before.id, "completed"), message="before")
        old = sentinel_setup.kill_primary()
        await asyncio.to_thread(sentinel_setup.wait_failover)
        # WAIT 1 needs a replica again: the old primary comes back as one.
        await asyncio.to_thread(sentinel_setup.restart, old)

        async def created_after() -> str | None:
            try:
                return (await producer.enqueue("noop", "after")).id
            except Exception:
                return None  # 503s while the sentinels switch over: a client retries

        after = await wait_until(created_after, timeout=20, message="a create after failover")
        await wait_until(
            status_is(sentinel_conn, after, "completed"), timeout=20, message="after failover"
        )
        # Acknowledged with WAIT 1 before the failover: the new primary has it.
        assert (await queries.get_task(sentinel_conn, before.id)).status == "completed"
    await assert_consistent(sentinel_conn)
