"""The schedule routes (SPEC section 12) through the ASGI app on a real Redis: every
validation error is a 400 that writes nothing, unknown names are 404s, and pause, resume,
trigger and delete answer as documented."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.seed import ensure_test_types
from tests.support.snapshot import snapshot

TASK = {"type": "noop", "payload": {"n": 1}}


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings)) as test_client:
        yield test_client


INVALID: list[tuple[str, Any]] = [
    ("neither rule", {"task": TASK}),
    ("both rules", {"cron": "* * * * *", "interval_seconds": 5, "task": TASK}),
    ("bad cron", {"cron": "99 * * * *", "task": TASK}),
    ("4 cron fields", {"cron": "* * * *", "task": TASK}),
    ("never fires", {"cron": "0 0 31 2 *", "task": TASK}),
    ("interval 0", {"interval_seconds": 0, "task": TASK}),
    ("interval text", {"interval_seconds": "10", "task": TASK}),
    ("unknown zone", {"cron": "* * * * *", "timezone": "Europe/Atlantis", "task": TASK}),
    ("no task", {"interval_seconds": 5}),
    ("unknown type", {"interval_seconds": 5, "task": {"type": "nope", "payload": 1}}),
    ("bad priority", {"interval_seconds": 5, "task": {**TASK, "priority": 9}}),
    ("bad queue", {"interval_seconds": 5, "task": {**TASK, "queue": "Bad Queue"}}),
    ("bad email", {"interval_seconds": 5, "task": {"type": "email", "payload": 42}}),
    ("bad webhook", {"interval_seconds": 5, "task": {**TASK, "webhook": "ftp://x"}}),
    (
        "fixed time",
        {"interval_seconds": 5, "task": {**TASK, "scheduled_for": "2030-01-01T00:00:00Z"}},
    ),
    ("dependencies", {"interval_seconds": 5, "task": {**TASK, "depends_on": ["x"]}}),
    ("extra field", {"interval_seconds": 5, "task": TASK, "colour": "red"}),
    ("paused text", {"interval_seconds": 5, "task": TASK, "paused": "maybe"}),
    ("not an object", [1, 2]),
]


@pytest.mark.parametrize(("case", "payload"), INVALID, ids=[case for case, _ in INVALID])
async def test_every_validation_error_is_a_400_that_writes_nothing(
    client: TestClient, conn: Conn, case: str, payload: Any
) -> None:
    assert client.put("/api/schedules/kept", json={"interval_seconds": 60, "task": TASK}).is_success
    before = await snapshot(conn)
    for name in ("fresh", "kept"):  # a create and a replace
        response = client.put(f"/api/schedules/{name}", json=payload)
        assert response.status_code == 400, (case, response.text)
        assert set(response.json()) == {"error", "details"} and response.json()["error"]
    assert await snapshot(conn) == before, case


async def test_a_bad_name_or_malformed_json_is_a_400_that_writes_nothing(
    client: TestClient, conn: Conn
) -> None:
    before = await snapshot(conn)
    for name in ("Upper", "-dash", "a" * 129, "sp ace"):
        response = client.put(f"/api/schedules/{name}", json={"interval_seconds": 5, "task": TASK})
        assert response.status_code == 400, name
    response = client.put(
        "/api/schedules/x", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["details"]
    assert await snapshot(conn) == before


def test_create_replace_get_list_pause_resume_trigger_delete(client: TestClient) -> None:
    body = {"cron": "*/5 * * * *", "timezone": "Europe/Berlin", "task": {**TASK, "queue": "q1"}}
    created = client.put("/api/schedules/report.daily", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["cron"] == "*/5 * * * *" and schedule["interval_seconds"] is None
    assert schedule["next_run_at"].endswith("Z") and schedule["last_task_id"] is None
    assert schedule["task"] == {**TASK, "queue": "q1", "priority": 3, "max_retries": 2}
    replaced = client.put(
        "/api/schedules/report.daily", json={"interval_seconds": 30, "task": TASK}
    )
    assert replaced.status_code == 200 and replaced.json()["interval_seconds"] == 30
    assert client.get("/api/schedules/report.daily").json() == replaced.json()
    assert [s["name"] for s in client.get("/api/schedules").json()] == ["report.daily"]
    assert client.get("/schedules").status_code == 200  # the unprefixed alias

    paused = client.post("/api/schedules/report.daily/pause").json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    resumed = client.post("/api/schedules/report.daily/resume").json()
    assert resumed["paused"] is False and resumed["next_run_at"]

    fired = client.post("/api/schedules/report.daily/trigger")
    assert fired.status_code == 201
    task = fired.json()
    assert task["schedule"] == "report.daily" and task["status"] == "pending"
    assert client.get(f"/api/tasks/{task['id']}").json()["schedule"] == "report.daily"
    after = client.get("/api/schedules/report.daily").json()
    assert after["last_task_id"] == task["id"] and after["last_run_at"]

    deleted = client.delete("/api/schedules/report.daily")
    assert deleted.status_code == 200 and deleted.json()["name"] == "report.daily"
    assert client.get("/api/schedules").json() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/schedules/missing"),
        ("delete", "/api/schedules/missing"),
        ("post", "/api/schedules/missing/pause"),
        ("post", "/api/schedules/missing/resume"),
        ("post", "/api/schedules/missing/trigger"),
    ],
)
def test_unknown_names_are_404(client: TestClient, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 404 and response.json()["error"] == "schedule missing not found"


def test_schedule_writes_need_an_admin_key(redis_server: Any, conn: Conn) -> None:
    ensure_test_types()
    keyed = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="read-key")
    body = {"interval_seconds": 5, "task": TASK}
    with TestClient(create_app(keyed)) as client:
        assert client.put("/api/schedules/a", json=body).status_code == 401
        read = {"Authorization": "Bearer read-key"}
        assert client.put("/api/schedules/a", json=body, headers=read).status_code == 403
        admin = {"Authorization": "Bearer admin-key"}
        assert client.put("/api/schedules/a", json=body, headers=admin).status_code == 201
        assert client.get("/api/schedules", headers=read).status_code == 200
        assert client.post("/api/schedules/a/trigger", headers=read).status_code == 403
