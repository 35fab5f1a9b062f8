"""Create input that was taken in a form SPEC section 3 does not allow, or changed on the way.

- NaN and the infinities in a payload are a 400 on every create path, never a silent null:
  the stdlib parser the API reads bodies with accepts `NaN`, `Infinity` and `1e400` (which it
  reads as an infinity), and orjson writes all three as `null`, so the task would run on data
  its client never sent. Each path goes through `transitions.prepare`; each is checked.
- `scheduled_for` is RFC 3339 text (pydantic alone also reads Unix seconds), and the answer
  to a create shows the time as stored. Field types are strict, as priority's always was.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.errors import ValidationFailed
from shared.producer import Producer
from shared.redis import Conn
from shared.settings import Settings
from tests.support.seed import counts, ensure_test_types

JSON = {"content-type": "application/json"}
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _refused(response: object, client: TestClient, *where: str | int) -> None:
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    error = response.json()  # type: ignore[attr-defined]
    assert "NaN and Infinity are not JSON numbers" in error["error"], error
    assert error["details"][0]["loc"] == ["body", *where, "payload"], error
    assert client.get("/api/stats").json()["total_tasks"] == 0


@pytest.mark.parametrize("number", NON_FINITE)
def test_rest_creates_refuse_a_non_finite_number(client: TestClient, number: str) -> None:
    payload = '{"values": [1, {"deep": ' + number + "}]}"
    single = '{"type": "noop", "payload": ' + payload + "}"
    # The ASGI fast path takes a plain create; an Idempotency-Key sends it through FastAPI.
    _refused(client.post("/api/tasks", content=single, headers=JSON), client)
    keyed = {**JSON, "idempotency-key": f"nan-{number}"}
    _refused(client.post("/api/tasks", content=single, headers=keyed), client)
    batch = '{"tasks": [{"type": "noop", "payload": 1}, ' + single + "]}"
    _refused(client.post("/api/tasks/batch", content=batch, headers=JSON), client, "tasks", 1)
    schedule = '{"interval_seconds": 60, "task": ' + single + "}"
    _refused(client.put("/api/schedules/nan", content=schedule, headers=JSON), client)
    assert client.get("/api/schedules").json() == []


def test_a_finite_payload_with_nulls_is_stored_as_sent(client: TestClient) -> None:
    body = {"type": "noop", "payload": {"a": None, "b": [1.5, None, -0.0, 1e308]}}
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 201, response.text
    stored = client.get(f"/api/tasks/{response.json()['id']}").json()
    assert stored["payload"] == body["payload"]


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
async def test_the_producer_refuses_a_non_finite_number(
    conn: Conn, settings: Settings, number: float
) -> None:
    ensure_test_types()
    async with Producer(conn, settings) as producer:
        with pytest.raises(ValidationFailed, match="NaN and Infinity"):
            await producer.enqueue("noop", {"x": (1, [number])})
        with pytest.raises(ValidationFailed, match="NaN and Infinity"):
            await producer.enqueue_many(
                [{"type": "noop", "payload": 1}, {"type": "noop", "payload": [number]}]
            )
    assert await counts(conn) == {}


@pytest.mark.parametrize("moment", [1900000000, 1.9e9, "1900000000", True, "2030-01-01"])
def test_scheduled_for_is_rfc3339_text_only(client: TestClient, moment: object) -> None:
    response = client.post(
        "/api/tasks", json={"type": "noop", "payload": 1, "scheduled_for": moment}
    )
    assert response.status_code == 400, response.text
    assert "RFC 3339" in response.json()["error"]
    assert client.get("/api/stats").json()["total_tasks"] == 0


@pytest.mark.parametrize("moment", ["1960-05-01T00:00:00Z", "0001-01-01T00:00:00Z"])
def test_a_time_before_1970_runs_now_and_the_answer_says_so(
    client: TestClient, moment: str
) -> None:
    """A past time runs now (SPEC section 3); Go's zero time is 0001-01-01. The 201 shows
    the task as stored, as a GET then reads it."""
    response = client.post(
        "/api/tasks", json={"type": "noop", "payload": 1, "scheduled_for": moment}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["scheduled_for"] is None and created["status"] == "pending"
    stored = client.get(f"/api/tasks/{created['id']}").json()
    assert stored["scheduled_for"] is None and stored["status"] == "pending"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/tasks", {"type": "noop", "payload": 1, "timeout_seconds": "300"}),
        ("/api/tasks", {"type": "noop", "payload": 1, "timeout_seconds": True}),
        ("/api/tasks/batch", {"tasks": [{"type": "noop", "payload": 1, "timeout_seconds": "5"}]}),
    ],
)
def test_timeout_seconds_must_be_a_number(client: TestClient, path: str, body: object) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert "timeout_seconds" in response.text
    assert client.get("/api/stats").json()["total_tasks"] == 0


@pytest.mark.parametrize("paused", ["yes", "no", 1, 0, "true"])
def test_a_schedule_paused_flag_must_be_a_boolean(client: TestClient, paused: object) -> None:
    body = {"interval_seconds": 5, "task": {"type": "noop", "payload": 1}, "paused": paused}
    response = client.put("/api/schedules/strict", json=body)
    assert response.status_code == 400, response.text
    assert "paused" in response.text
    assert client.get("/api/schedules").json() == []
    ok = client.put("/api/schedules/strict", json={**body, "paused": True})
    assert ok.status_code == 201 and ok.json()["paused"] is True


@pytest.mark.parametrize("keyed", [False, True])
def test_a_batch_error_names_its_item_and_a_single_create_none(
    client: TestClient, keyed: bool
) -> None:
    """Of up to 1,000 items, the one to fix is named, in the message and in `loc`, as the
    request's own validation names it; a single create (with or without an Idempotency-Key,
    which takes another path) is not called an item of a batch."""
    headers = {"idempotency-key": "batch-item"} if keyed else {}
    items = [{"type": "noop", "payload": 1}, {"type": "teleport", "payload": 1}]
    response = client.post("/api/tasks/batch", json={"tasks": items}, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"].startswith("tasks[1]: unknown task type 'teleport'"), error
    assert error["details"][0]["loc"] == ["body", "tasks", 1, "type"], error
    single = client.post("/api/tasks", json=items[1], headers=headers)
    assert single.status_code == 400, single.text
    assert single.json()["error"].startswith("unknown task type 'teleport'")
    assert single.json()["details"][0]["loc"] == ["body", "type"]
    assert client.get("/api/stats").json()["total_tasks"] == 0
