"""What fuzzing the API found, kept as plain regression tests (seeds in the test names).

Each was a 500 (or an answer the OpenAPI document did not describe) before it was fixed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.settings import Settings
from tests.support.seed import ensure_test_types

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(settings: Settings, conn: object) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def assert_400(client: TestClient, body: object, needle: str, path: str = "/api/tasks") -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert needle in error["error"] and isinstance(error["details"], list), error
    assert client.get("/api/stats").json()["total_tasks"] == 0


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 2**70])
def test_payload_integer_beyond_64_bits_is_400(client: TestClient, number: int) -> None:
    # schemathesis seed 1: POST /api/tasks/batch {"tasks": [{"payload": -9223372036854775809}]}
    assert_400(client, {"type": "noop", "payload": number}, "payload cannot be stored as JSON")
    body = {"tasks": [{"type": "noop", "payload": 1}, {"type": "noop", "payload": number}]}
    assert_400(client, body, "payload cannot be stored as JSON", "/api/tasks/batch")


def test_payload_nested_deeper_than_json_encoder_allows_is_400(client: TestClient) -> None:
    raw = b'{"type": "noop", "payload": ' + b"[" * 300 + b"]" * 300 + b"}"
    response = client.post("/api/tasks", content=raw, headers=JSON)
    assert response.status_code == 400 and "Recursion limit" in response.json()["error"]


def test_lone_surrogate_in_payload_is_400(client: TestClient) -> None:
    raw = b'{"type": "noop", "payload": "\\ud800"}'
    response = client.post("/api/tasks", content=raw, headers=JSON)
    assert response.status_code == 400 and "surrogates" in response.json()["error"]


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_schedule_outside_the_representable_years_is_400(client: TestClient, moment: str) -> None:
    # Before: 9999-12-31T23:59:59-14:00 was written to Redis, then could not be read back (500),
    # leaving a record no worker could decode.
    body = {"type": "noop", "payload": 1, "scheduled_for": moment}
    assert_400(client, body, "outside years 1..9999")


@pytest.mark.parametrize(
    ("url", "needle"),
    [("http://[::1", "cannot be parsed"), ("http://\x00x/", "control"), ("http://a b/", "spaces")],
)
def test_unparsable_webhook_url_is_400(client: TestClient, url: str, needle: str) -> None:
    assert_400(client, {"type": "noop", "payload": 1, "webhook": url}, needle)
    assert_400(client, {"type": "webhook", "payload": url}, needle)


def test_idempotent_replay_status_is_documented(client: TestClient) -> None:
    # schemathesis seed 1: a replayed create answered 200, which the document did not list.
    spec = client.get("/openapi.json").json()
    for path in ("/api/tasks", "/api/tasks/batch"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "201", "400"} <= set(responses), responses


def test_no_operation_documents_a_422_it_never_sends(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
    assert client.post("/api/tasks", json={"type": 1}).status_code == 400
