"""Every REST route against a real Redis, through the ASGI app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.settings import Settings
from tests.support.seed import ensure_test_types


@pytest.fixture
def client(settings: Settings, conn: object) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def create(client: TestClient, **body: object) -> dict[str, object]:
    response = client.post("/api/tasks", json={"type": "noop", "payload": {"n": 1}, **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_create_then_get_and_unprefixed_alias(client: TestClient) -> None:
    task = create(client, priority=5, max_retries=3, webhook="https://example.com/hook")
    assert task["status"] == "pending" and task["priority"] == 5 and task["retry_count"] == 0
    assert client.get(f"/api/tasks/{task['id']}").json() == task
    assert client.get(f"/tasks/{task['id']}").json() == task
    assert client.get("/api/tasks/does-not-exist").status_code == 404
    assert client.get("/api/tasks/does-not-exist").json()["error"]


def test_seed_style_create_defaults(client: TestClient) -> None:
    response = client.post("/tasks", json={"type": "email", "payload": "user@example.com"})
    assert response.status_code == 201
    task = response.json()
    assert (task["priority"], task["max_retries"], task["status"]) == (3, 2, "pending")
    assert task["created_at"].endswith("Z")


def test_batch_creates_all(client: TestClient) -> None:
    body = {"tasks": [{"type": "noop", "payload": i} for i in range(10)]}
    response = client.post("/api/tasks/batch", json=body)
    assert response.status_code == 201
    assert [t["payload"] for t in response.json()["tasks"]] == list(range(10))
    assert client.get("/api/stats").json()["total_tasks"] == 10


def test_batch_with_one_bad_item_writes_nothing(client: TestClient) -> None:
    body = {"tasks": [{"type": "noop", "payload": 1}, {"type": "email", "payload": "nope"}]}
    assert client.post("/api/tasks/batch", json=body).status_code == 400
    assert client.get("/api/stats").json()["total_tasks"] == 0


def test_idempotency_key_replays(client: TestClient) -> None:
    headers = {"Idempotency-Key": "abc-1"}
    first = client.post("/api/tasks", json={"type": "noop", "payload": 1}, headers=headers)
    again = client.post("/api/tasks", json={"type": "noop", "payload": 1}, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/api/stats").json()["total_tasks"] == 1


def test_list_newest_first_with_cursor_pages(client: TestClient) -> None:
    ids = [create(client, payload=i)["id"] for i in range(7)]
    seen: list[str] = []
    url = "/api/tasks?limit=3"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [t["id"] for t in response.json()]
        link = response.headers.get("Link")
        if link:
            assert response.headers["X-Next-Cursor"] in link and 'rel="next"' in link
            url = link[1 : link.index(">")]
        else:
            url = ""
    assert seen == list(reversed(ids))


def test_list_filters_by_status_and_type(client: TestClient) -> None:
    create(client)
    create(client, type="image")
    scheduled = create(client, scheduled_for=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert [t["id"] for t in client.get("/api/tasks?status=scheduled").json()] == [scheduled["id"]]
    assert [t["type"] for t in client.get("/api/tasks?type=image").json()] == ["image"]
    assert client.get("/api/tasks?status=failed").json() == []


def test_cancel_and_retry_routes(client: TestClient) -> None:
    task = create(client, scheduled_for=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    cancelled = client.delete(f"/api/tasks/{task['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.delete(f"/api/tasks/{task['id']}")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    retried = client.post(f"/api/tasks/{task['id']}/retry")
    assert retried.status_code == 200
    assert retried.json() == {"status": "retrying", "task_id": task["id"]}
    assert client.get(f"/api/tasks/{task['id']}").json()["status"] == "pending"
    assert client.post(f"/api/tasks/{task['id']}/retry").status_code == 409
    assert client.post("/api/tasks/nope/retry").status_code == 404
    assert client.delete("/api/tasks/nope").status_code == 404


def test_details_stats_health_metrics(client: TestClient) -> None:
    task = create(client)
    details = client.get(f"/api/tasks/{task['id']}/details").json()
    assert set(details) == {
        "task",
        "attempts",
        "events",
        "webhook_deliveries",
        "depends_on",  # SPEC section 11
        "dependents",
    }
    assert details["events"][0]["event"] == "task.created"
    stats = client.get("/api/stats").json()
    assert stats["total_tasks"] == 1 and stats["pending_count"] == 1
    assert stats["queue_depth_by_priority"]["3"] == 1
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["redis"] == "ok"
    assert set(health.json()["services"]) == {"worker", "scheduler", "notifier", "dashboard"}
    metrics = client.get("/metrics").text
    assert 'taskqueue_tasks{queue="default",status="pending"} 1.0' in metrics
    assert client.get("/openapi.json").json()["paths"]["/api/tasks"]


def test_event_stream_delivers_transitions(client: TestClient) -> None:
    with client.stream("GET", "/api/events") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        task = create(client)
        got = []
        for line in lines:
            if line.startswith("data:"):
                got.append(line)
                break
        assert task["id"] in got[0] and "task.created" in got[0]
