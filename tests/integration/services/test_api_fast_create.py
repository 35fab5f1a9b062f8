"""`POST /api/tasks` answers the same whether services/api/fast_create.py or the FastAPI route
handles it (the route still takes every request with an Idempotency-Key)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.fast_create import FastCreate
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.seed import assert_consistent, counts, ensure_test_types

BODY = {"type": "noop", "payload": {"n": [1, 2.5, "x"]}, "priority": 4, "max_retries": 1}


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _shape(response: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and body of a create, less what differs between two creates."""
    body = response.json()
    for varying in ("id", "created_at", "updated_at"):
        assert body.pop(varying)
    headers = {name: response.headers[name] for name in ("content-type",)}
    assert int(response.headers["content-length"]) == len(response.content)
    return response.status_code, headers, body


async def test_fast_and_routed_creates_answer_alike(client: TestClient, conn: Conn) -> None:
    fast = client.post("/api/tasks", json=BODY)
    routed = client.post("/api/tasks", json=BODY, headers={"Idempotency-Key": "k-1"})
    assert _shape(fast) == _shape(routed)
    assert fast.json()["created_at"].endswith("Z")
    assert client.get(f"/api/tasks/{fast.json()['id']}").json() == fast.json()
    unprefixed = client.post("/tasks", json=BODY)
    assert _shape(unprefixed) == _shape(fast)
    assert await counts(conn) == {"total": 3, "pending": 3}
    await assert_consistent(conn)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 201),
        ("application/json; charset=utf-8", 201),
        ("Application/JSON", 201),
        ("application/merge-patch+json", 201),  # FastAPI's route reads +json too
        ("text/plain", 400),
        (None, 400),
    ],
)
def test_content_types_as_fastapi_reads_them(
    client: TestClient, content_type: str | None, status: int
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/api/tasks", content=b'{"type": "noop", "payload": 1}', headers=headers)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] and isinstance(response.json()["details"], list)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"type": "noop", "payload": 123456789012345678901234567890}', "cannot be stored"),
        # The stdlib reads NaN, which orjson would store as null: refused, not changed.
        (b'{"type": "noop", "payload": NaN}', "NaN and Infinity are not JSON numbers"),
        (b'{"type": "noop", "payload": 1', "malformed JSON body"),
        (b'[{"type": "noop", "payload": 1}]', "invalid request"),
        (b'{"type": "teleport", "payload": 1}', "unknown task type"),
        (b'{"type": "noop", "payload": 1, "priority": true}', "priority"),
        (b"[" * 100_000, ""),  # nested too deep for the parser
    ],
)
def test_odd_bodies_get_the_routes_answer(client: TestClient, body: bytes, error: str) -> None:
    response = client.post("/api/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert error in response.json()["error"]


def test_api_keys_are_checked_on_the_fast_path(redis_server: Any, conn: Conn) -> None:
    ensure_test_types()
    settings = make_settings(redis_server.url, api_keys="admin-k", api_read_keys="read-k")
    with TestClient(create_app(settings)) as client:
        missing = client.post("/api/tasks", json=BODY)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/api/tasks", json=BODY, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        read = client.post("/api/tasks", json=BODY, headers={"Authorization": "Bearer read-k"})
        assert read.status_code == 403 and read.json()["error"] == "this API key may only read"
        ok = client.post("/api/tasks", json=BODY, headers={"Authorization": "bearer admin-k"})
        assert ok.status_code == 201, ok.text


def test_plain_creates_take_the_fast_path(settings: Settings) -> None:
    async def unused(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    fast = FastCreate(unused, settings)
    json_type = (b"content-type", b"application/json")
    message = {"type": "http.request", "body": b'{"type": "noop", "payload": 1}'}
    assert fast._plain_create({"headers": [json_type]}, message) is not None
    keyed = {"headers": [json_type, (b"idempotency-key", b"k")]}
    assert fast._plain_create(keyed, message) is None
    assert fast._plain_create({"headers": []}, message) is None
