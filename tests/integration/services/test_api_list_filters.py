"""`GET /api/tasks` filters given with an empty value (SPEC section 3 spells the query
`?status=&type=&limit=...`): each means no filter, as if absent, not a 400."""

from __future__ import annotations

from collections.abc import Iterator

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


def create(client: TestClient, **body: object) -> str:
    response = client.post("/api/tasks", json={"type": "noop", "payload": {"n": 1}, **body})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize(
    "query", ["status=", "type=", "queue=", "status=&type=&queue=", "status=&limit=50"]
)
def test_an_empty_filter_means_no_filter(client: TestClient, query: str) -> None:
    ids = [create(client), create(client, type="image"), create(client, queue="media")]
    everything = [t["id"] for t in client.get("/api/tasks").json()]
    assert sorted(everything) == sorted(ids)
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 200, response.text
    assert [t["id"] for t in response.json()] == everything


def test_empty_filters_page_like_no_filters(client: TestClient) -> None:
    ids = [create(client) for _ in range(3)]
    first = client.get("/api/tasks?status=&type=&limit=2")
    assert first.status_code == 200, first.text
    link = first.headers["Link"]
    rest = client.get(link[1 : link.index(">")])
    assert [t["id"] for t in first.json() + rest.json()] == list(reversed(ids))


def test_stats_with_an_empty_queue_is_every_queue(client: TestClient) -> None:
    create(client)
    create(client, queue="media")
    response = client.get("/api/stats?queue=")
    assert response.status_code == 200, response.text
    assert response.json()["total_tasks"] == 2


@pytest.mark.parametrize("query", ["status=nope", "queue=Not%20A%20Queue", "type=" + "x" * 101])
def test_a_wrong_filter_is_still_a_400(client: TestClient, query: str) -> None:
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]
