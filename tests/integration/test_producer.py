"""The Python producer API (shared/producer.py) against a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shared import transitions
from shared.errors import TaskNotFound, ValidationFailed
from shared.keys import EVENTS_CHANNEL
from shared.producer import Producer
from shared.redis import Conn
from shared.settings import Settings
from shared.transitions import Outcome
from tests.support.pubsub import wait_subscribed
from tests.support.seed import assert_consistent, counts, ensure_test_types


@pytest.fixture
async def producer(conn: Conn, settings: Settings) -> AsyncIterator[Producer]:
    ensure_test_types()
    async with Producer(conn, settings) as p:
        yield p


async def _finish(conn: Conn, settings: Settings, ok: bool = True) -> None:
    [claimed] = await transitions.claim(
        conn, "work", 1, worker="Worker T", owner="w-t", lease_seconds=30
    )
    outcome = Outcome(claimed.task.id, claimed.token, ok, result={"done": 1}, error="boom")
    await transitions.report_outcomes(conn, [outcome], settings)


async def test_enqueue_returns_the_task_as_stored(producer: Producer) -> None:
    task = await producer.enqueue("noop", {"n": 1}, priority=5, max_retries=0)
    assert task.status == "pending" and task.priority == 5 and task.max_retries == 0
    assert await producer.get(task.id) == task
    later = datetime.now(UTC) + timedelta(minutes=5)
    scheduled = await producer.enqueue(
        "noop", [1, 2], scheduled_for=later, timeout_seconds=9, webhook="http://127.0.0.1:9/h"
    )
    assert scheduled.status == "scheduled" and await producer.get(scheduled.id) == scheduled
    # The returned task is built without re-validation: its JSON (the REST answer) must be
    # byte for byte what reading it back gives.
    for created in (task, scheduled):
        stored = await producer.get(created.id)
        assert created.model_dump_json() == stored.model_dump_json()


async def test_enqueue_validates_like_the_api(producer: Producer, conn: Conn) -> None:
    with pytest.raises(ValidationFailed, match="unknown task type"):
        await producer.enqueue("no-such-type", 1)
    with pytest.raises(ValidationFailed, match="priority"):
        await producer.enqueue("noop", 1, priority=9)
    with pytest.raises(ValidationFailed, match="offset"):
        await producer.enqueue("noop", 1, scheduled_for=datetime(2030, 1, 1))
    assert await counts(conn) == {}


async def test_enqueue_many_is_all_or_nothing(producer: Producer, conn: Conn) -> None:
    tasks = await producer.enqueue_many([{"type": "noop", "payload": n} for n in range(5)])
    assert [t.payload for t in tasks] == list(range(5))
    with pytest.raises(ValidationFailed):
        await producer.enqueue_many([{"type": "noop", "payload": 1}, {"type": "nope"}])
    assert await counts(conn) == {"total": 5, "pending": 5}
    assert await producer.enqueue_many([]) == []
    await assert_consistent(conn)


async def test_enqueue_many_writes_ten_thousand_tasks_whole_or_refuses_before_writing(
    producer: Producer, conn: Conn
) -> None:
    """A script that fails half-way is not rolled back: 5,000 tasks once became orphans that
    never ran and 4,100 scheduled ones drove the counters negative. Ten thousand of each go
    in whole; one more than the cap is refused before anything is written."""
    later = datetime.now(UTC) + timedelta(hours=1)
    plain = await producer.enqueue_many({"type": "noop", "payload": n} for n in range(10_000))
    scheduled = await producer.enqueue_many(
        {"type": "noop", "payload": n, "scheduled_for": later} for n in range(10_000)
    )
    assert len(plain) == len(scheduled) == transitions.MAX_ENQUEUE_BATCH == 10_000
    assert await counts(conn) == {"total": 20_000, "pending": 10_000, "scheduled": 10_000}
    await assert_consistent(conn)
    too_many = [{"type": "noop", "payload": n} for n in range(transitions.MAX_ENQUEUE_BATCH + 1)]
    with pytest.raises(ValidationFailed, match="at most 10000 tasks"):
        await producer.enqueue_many(too_many)
    assert await counts(conn) == {"total": 20_000, "pending": 10_000, "scheduled": 10_000}


async def test_idempotency_key_returns_the_original(producer: Producer, conn: Conn) -> None:
    first = await producer.enqueue("noop", 1, idempotency_key="order-7")
    again = await producer.enqueue("noop", 2, idempotency_key="order-7")
    assert again.id == first.id and await counts(conn) == {"total": 1, "pending": 1}


async def test_concurrent_calls_are_coalesced_and_fail_alone(
    producer: Producer, conn: Conn
) -> None:
    calls = [producer.enqueue("noop", n) for n in range(50)]
    calls.insert(25, producer.enqueue("nope", 0))
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    created = [r for r in results if not isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ValidationFailed)
    assert sorted(t.payload for t in created) == list(range(50))
    assert len({t.id for t in created}) == 50
    assert await counts(conn) == {"total": 50, "pending": 50}
    await assert_consistent(conn)


async def test_wait_returns_when_the_task_ends(
    producer: Producer, conn: Conn, settings: Settings
) -> None:
    task = await producer.enqueue("noop", 1)
    waiting = asyncio.create_task(producer.wait(task.id, timeout=10))
    await wait_subscribed(conn, EVENTS_CHANNEL)  # the waiter subscribed before reading the task
    assert not waiting.done()
    await _finish(conn, settings)
    done = await waiting
    assert done.status == "completed" and done.result == {"done": 1}
    # Already final: returns at once, for as many waiters as ask.
    again = await asyncio.gather(*(producer.wait(task.id, timeout=1) for _ in range(3)))
    assert {t.status for t in again} == {"completed"}


async def test_wait_survives_a_dropped_subscription(
    producer: Producer, conn: Conn, settings: Settings
) -> None:
    """A task that ends while the producer's subscription is down is still seen: the drop
    wakes every waiter to re-read its task once subscribed again (redis-py alone would
    re-subscribe silently and lose what was published meanwhile)."""
    task = await producer.enqueue("noop", 1)
    waiting = asyncio.create_task(producer.wait(task.id, timeout=10))
    await wait_subscribed(conn, EVENTS_CHANNEL)
    assert await conn.redis.client_kill_filter(_type="pubsub") == 1
    await _finish(conn, settings)  # published while nobody listens
    done = await waiting
    assert done.status == "completed"


async def test_wait_returns_failed_tasks_and_times_out(
    producer: Producer, conn: Conn, settings: Settings
) -> None:
    doomed = await producer.enqueue("noop", 1, max_retries=0)
    waiting = asyncio.create_task(producer.wait(doomed.id, timeout=10))
    await _finish(conn, settings, ok=False)
    failed = await waiting
    assert failed.status == "failed" and failed.error == "boom"
    stuck = await producer.enqueue("noop", 2)
    with pytest.raises(TimeoutError):
        await producer.wait(stuck.id, timeout=0.2)
    with pytest.raises(TaskNotFound):
        await producer.wait("no-such-id", timeout=1)


async def test_from_settings_owns_its_connection(settings: Settings, conn: Conn) -> None:
    ensure_test_types()
    async with Producer.from_settings(settings) as producer:
        task = await producer.enqueue("noop", 3)
    assert (await conn.redis.hget(conn.keys.task(task.id), "status")) == "pending"
