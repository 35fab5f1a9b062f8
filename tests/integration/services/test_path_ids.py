"""Task ids in paths: anything that is not an id's shape (lowercase UUID text) is a 404 JSON
error that touches nothing, on the API (both prefixes) and on the dashboard's routes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.dashboard.app import create_app as create_dashboard
from shared import transitions
from shared.redis import Conn
from shared.settings import Settings
from tests.support.api_server import serve
from tests.support.seed import counts, ensure_test_types, seed_tasks

# A real id with a suffix names one of its history lists (a Redis LIST, not the record).
SUFFIXES = (":events", ":deliveries", ":attempts", "x", "/")


def bad_ids(task_id: str) -> list[str]:
    return [
        *(f"{task_id}{suffix}" for suffix in SUFFIXES if suffix != "/"),
        task_id.upper(),
        task_id.replace("-", ""),
        "nope",
        "*",
        "%00",
        "a" * 300,
    ]


@pytest.fixture
def api(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client


async def claim_it(conn: Conn) -> None:
    """Claim the task, so its events list (a LIST next to its record) exists."""
    [claimed] = await transitions.claim(
        conn, "work", 1, worker="Worker T", owner="worker-test", lease_seconds=30
    )
    assert await conn.redis.llen(conn.keys.task_events(claimed.task.id)) > 0


async def snapshot(conn: Conn, task_id: str) -> tuple[object, ...]:
    """What a wrongly accepted call could change: the counters and the task's history."""
    k = conn.keys
    return (
        await counts(conn),
        await conn.redis.hgetall(k.task(task_id)),
        await conn.redis.lrange(k.task_events(task_id), 0, -1),
    )


async def test_api_answers_404_json_for_any_id_that_is_not_an_id(
    api: TestClient, conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings)
    await claim_it(conn)
    before = await snapshot(conn, task.id)
    for prefix in ("/api", ""):
        for bad in bad_ids(task.id):
            for method, path in (
                ("GET", f"{prefix}/tasks/{bad}"),
                ("GET", f"{prefix}/tasks/{bad}/details"),
                ("DELETE", f"{prefix}/tasks/{bad}"),
                ("POST", f"{prefix}/tasks/{bad}/retry"),
            ):
                reply = api.request(method, path)
                assert reply.status_code == 404, (method, path, reply.text)
                assert reply.json()["error"] and reply.json()["details"] == [], path
    assert await snapshot(conn, task.id) == before
    assert api.get(f"/api/tasks/{task.id}").status_code == 200


async def test_dashboard_answers_404_json_for_any_id_that_is_not_an_id(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    [task] = await seed_tasks(conn, settings)
    await claim_it(conn)
    before = await snapshot(conn, task.id)
    with serve(create_dashboard(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for bad in bad_ids(task.id):
                for method, path in (
                    ("GET", f"/api/tasks/{bad}"),
                    ("POST", f"/api/tasks/{bad}/retry"),
                    ("POST", f"/api/tasks/{bad}/cancel"),
                ):
                    reply = await http.request(method, path)
                    assert reply.status_code == 404, (method, path, reply.text)
                    assert reply.json()["error"], path
            assert (await http.get(f"/api/tasks/{task.id}")).status_code == 200
    assert await snapshot(conn, task.id) == before
