"""Idempotency-Key edges: batch replays, replays after RESULT_TTL_SECONDS purged the tasks,
and keys scoped per API key (two clients never share one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import transitions
from shared.errors import ReplayPurged
from shared.producer import Producer
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.seed import counts, ensure_test_types

BATCH = {"tasks": [{"type": "noop", "payload": n} for n in range(3)]}


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as test_client:
        yield test_client


async def purge(conn: Conn, settings: Settings, task_ids: list[str]) -> None:
    """Cancel the tasks, let their RESULT_TTL_SECONDS pass, and run the retention purge."""
    for task_id in task_ids:
        await transitions.cancel(conn, task_id, settings)
        await conn.redis.zadd(conn.keys.expiry, {task_id: 0})  # due for purging now
    assert await transitions.purge_expired(conn) == len(task_ids)


def test_batch_replay_returns_the_batch(client: TestClient) -> None:
    headers = {"Idempotency-Key": "batch-1"}
    first = client.post("/api/tasks/batch", json=BATCH, headers=headers)
    again = client.post("/api/tasks/batch", json=BATCH, headers=headers)
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and len(again.json()["tasks"]) == 3
    assert client.get("/api/stats").json()["total_tasks"] == 3


async def test_replay_after_purge_is_409_naming_the_purged_task(
    client: TestClient, conn: Conn, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "purged-1"}
    task = client.post("/api/tasks", json={"type": "noop", "payload": 1}, headers=headers).json()
    await purge(conn, settings, [task["id"]])
    before = await counts(conn)

    again = client.post("/api/tasks", json={"type": "noop", "payload": 1}, headers=headers)

    assert again.status_code == 409, again.text
    body = again.json()
    assert "purged" in body["error"] and "Idempotency-Key" in body["error"]
    assert body["details"] == [{"task_id": task["id"], "reason": "purged"}]
    assert await counts(conn) == before  # nothing created, nothing changed


async def test_batch_replay_after_a_partial_purge_is_409(
    client: TestClient, conn: Conn, settings: Settings
) -> None:
    headers = {"Idempotency-Key": "batch-purged"}
    tasks = client.post("/api/tasks/batch", json=BATCH, headers=headers).json()["tasks"]
    await purge(conn, settings, [tasks[0]["id"], tasks[2]["id"]])
    before = await counts(conn)

    again = client.post("/api/tasks/batch", json=BATCH, headers=headers)

    assert again.status_code == 409, again.text
    assert [d["task_id"] for d in again.json()["details"]] == [tasks[0]["id"], tasks[2]["id"]]
    assert await counts(conn) == before


async def test_producer_replay_after_purge_raises(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    producer = Producer(conn, settings)
    try:
        task = await producer.enqueue("noop", 1, idempotency_key="lib-1")
        await purge(conn, settings, [task.id])
        with pytest.raises(ReplayPurged) as raised:
            await producer.enqueue("noop", 1, idempotency_key="lib-1")
    finally:
        await producer.aclose()
    assert raised.value.task_ids == [task.id]


async def test_keys_are_scoped_per_api_key(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    settings = make_settings(settings.redis_url, api_keys="key-one,key-two")
    body = {"type": "noop", "payload": 1}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as api:
        one = {"Authorization": "Bearer key-one", "Idempotency-Key": "order-1"}
        two = {"Authorization": "Bearer key-two", "Idempotency-Key": "order-1"}
        first = api.post("/api/tasks", json=body, headers=one)
        other = api.post("/api/tasks", json=body, headers=two)
        replay = api.post("/api/tasks", json=body, headers=one)
        batch = api.post("/api/tasks/batch", json={"tasks": [body]}, headers=two)

    assert (first.status_code, other.status_code, replay.status_code) == (201, 201, 200)
    assert other.json()["id"] != first.json()["id"]
    assert replay.json()["id"] == first.json()["id"]
    assert batch.status_code == 200 and batch.json()["tasks"] == [other.json()]
    # The stored names carry a hash of the API key, never the key itself.
    names = [name async for name in conn.redis.scan_iter(f"{conn.keys.idempotency_prefix}*")]
    assert len(names) == 2 and not any("key-one" in n or "key-two" in n for n in names)
