"""Unique tasks (SPEC section 10): while a task of a queue with a unique_key is not final,
another create with that key answers 409 naming it and writes nothing, on every create path
(the ASGI fast path, the FastAPI routes, the batch route, the producer); whichever script
ends the task frees the key."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.api.app import create_app
from shared import queries, transitions
from shared.errors import UniqueConflict
from shared.producer import Producer
from shared.redis import Conn
from shared.settings import Settings
from shared.transitions import Outcome
from tests.support.api_server import serve
from tests.support.seed import assert_consistent, counts, create, ensure_test_types

KEY = "sync user:42"


async def _holder(conn: Conn, key: str = KEY, queue: str | None = None) -> str | None:
    return await conn.redis.get(conn.queue(queue).unique(key))  # type: ignore[no-any-return]


async def _finish(conn: Conn, settings: Settings, ok: bool) -> str:
    [claimed] = await transitions.claim(conn, "work", 1, worker="W", owner="w", lease_seconds=30)
    outcome = Outcome(claimed.task.id, claimed.token, ok, result=1, error="boom")
    await transitions.report_outcomes(conn, [outcome], settings)
    return claimed.task.id


async def test_fifty_concurrent_creates_with_one_key_give_exactly_one_201(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    app = create_app(settings)
    body = {"type": "noop", "payload": {"n": 1}, "unique_key": KEY}
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            answers = await asyncio.gather(*(http.post("/api/tasks", json=body) for _ in range(50)))
    created = [a for a in answers if a.status_code == 201]
    refused = [a for a in answers if a.status_code == 409]
    assert len(created) == 1 and len(refused) == 49, [a.status_code for a in answers]
    winner = created[0].json()
    assert winner["unique_key"] == KEY
    for answer in refused:
        assert answer.json()["details"] == [{"task_id": winner["id"]}], answer.text
        assert "unique_key" in answer.json()["error"]
    assert await counts(conn) == {"total": 1, "pending": 1}
    assert await _holder(conn) == winner["id"]
    await assert_consistent(conn)


async def test_every_create_route_refuses_a_held_key_and_writes_nothing(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    app = create_app(settings)
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await _refusals(http)
    assert await counts(conn) == {"total": 1, "pending": 1}
    assert await counts(conn, queue="media") == {"total": 1, "pending": 1}
    assert await _holder(conn, "other") is None
    await assert_consistent(conn)


async def _refusals(http: httpx.AsyncClient) -> None:
    """Each route with a held key: a 409 naming the holder; bad keys: 400."""
    first = await http.post("/api/tasks", json={"type": "noop", "payload": 1, "unique_key": KEY})
    assert first.status_code == 201, first.text
    holder = first.json()["id"]
    # The FastAPI route (an Idempotency-Key takes it past the fast path).
    again = await http.post(
        "/api/tasks",
        json={"type": "noop", "payload": 2, "unique_key": KEY},
        headers={"Idempotency-Key": "k-1"},
    )
    assert again.status_code == 409 and again.json()["details"] == [{"task_id": holder}]
    # A batch with one held key is refused whole.
    batch = await http.post(
        "/api/tasks/batch",
        json={
            "tasks": [
                {"type": "noop", "payload": 3},
                {"type": "noop", "payload": 4, "unique_key": KEY},
            ]
        },
    )
    assert batch.status_code == 409 and batch.json()["details"] == [{"task_id": holder}]
    # Two items of one batch with one key: the batch cannot be whole, a 400.
    twice = await http.post(
        "/api/tasks/batch",
        json={
            "tasks": [
                {"type": "noop", "payload": 5, "unique_key": "other"},
                {"type": "noop", "payload": 6, "unique_key": "other"},
            ]
        },
    )
    assert twice.status_code == 400 and "more than once" in twice.json()["error"]
    for bad in ("", "x" * 201, 7):
        refused = await http.post(
            "/api/tasks", json={"type": "noop", "payload": 1, "unique_key": bad}
        )
        assert refused.status_code == 400, (bad, refused.text)
    # The same key in another queue is another key.
    elsewhere = await http.post(
        "/api/tasks", json={"type": "noop", "payload": 1, "unique_key": KEY, "queue": "media"}
    )
    assert elsewhere.status_code == 201, elsewhere.text


async def test_the_producer_refuses_alone_among_coalesced_creates(
    conn: Conn, settings: Settings
) -> None:
    """Concurrent producer calls are sent together; a unique task goes out alone, so its
    conflict fails it and none of the others."""
    ensure_test_types()
    async with Producer(conn, settings) as producer:
        results = await asyncio.gather(
            *(producer.enqueue("noop", n, unique_key=KEY) for n in range(10)),
            *(producer.enqueue("noop", n) for n in range(10)),
            return_exceptions=True,
        )
    unique, plain = results[:10], results[10:]
    winners = [r for r in unique if not isinstance(r, BaseException)]
    conflicts = [r for r in unique if isinstance(r, UniqueConflict)]
    assert len(winners) == 1 and len(conflicts) == 9, unique
    assert all(c.holder_id == winners[0].id for c in conflicts)
    assert not any(isinstance(r, BaseException) for r in plain), plain
    assert await counts(conn) == {"total": 11, "pending": 11}


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
async def test_the_script_that_ends_the_task_frees_its_key(
    conn: Conn, settings: Settings, end: str
) -> None:
    ensure_test_types()
    [task], _ = await transitions.enqueue(conn, [create(unique_key=KEY, max_retries=0)], settings)
    if end == "cancelled":
        await transitions.cancel(conn, task.id, settings)
    else:
        assert await _finish(conn, settings, ok=end == "completed") == task.id
    assert (await queries.get_task(conn, task.id)).status == end
    assert await _holder(conn) is None
    [after], _ = await transitions.enqueue(conn, [create(unique_key=KEY)], settings)
    assert await _holder(conn) == after.id
    await assert_consistent(conn)


async def test_a_retrying_task_keeps_its_key(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    [task], _ = await transitions.enqueue(conn, [create(unique_key=KEY, max_retries=2)], settings)
    await _finish(conn, settings, ok=False)
    assert (await queries.get_task(conn, task.id)).status == "retrying"
    with pytest.raises(UniqueConflict) as refused:
        await transitions.enqueue(conn, [create(unique_key=KEY)], settings)
    assert refused.value.holder_id == task.id


async def test_a_manual_retry_takes_the_key_again_unless_another_task_holds_it(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    [first], _ = await transitions.enqueue(conn, [create(unique_key=KEY)], settings)
    await transitions.cancel(conn, first.id, settings)
    [second], _ = await transitions.enqueue(conn, [create(unique_key=KEY)], settings)
    with pytest.raises(UniqueConflict) as refused:
        await transitions.retry_failed(conn, first.id)
    assert refused.value.holder_id == second.id
    assert (await queries.get_task(conn, first.id)).status == "cancelled"  # untouched
    await transitions.cancel(conn, second.id, settings)
    retried = await transitions.retry_failed(conn, first.id)
    assert retried.status == "pending" and await _holder(conn) == first.id
    await assert_consistent(conn)


async def test_an_entry_whose_task_is_gone_holds_nothing(conn: Conn, settings: Settings) -> None:
    """A record deleted by hand (or a key left by an older release) does not block the key."""
    ensure_test_types()
    await conn.redis.set(conn.keys.unique(KEY), "3f1c9d2e-0000-4000-8000-000000000000")
    [task], _ = await transitions.enqueue(conn, [create(unique_key=KEY)], settings)
    assert await _holder(conn) == task.id
