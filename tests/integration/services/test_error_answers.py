"""The api and the dashboard answer an error the same way: one table (shared/http_errors.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from services.api.app import create_app as create_api
from services.dashboard import routes as dashboard_routes
from services.dashboard.app import create_app as create_dashboard
from shared import transitions
from shared.redis import Conn
from shared.settings import Settings
from tests.support.api_server import serve
from tests.support.seed import create, ensure_test_types


@pytest.fixture
def both(settings: Settings) -> Iterator[tuple[str, str]]:
    """Base URLs of an api and a dashboard on the same Redis."""
    ensure_test_types()
    with ExitStack() as stack:
        api = stack.enter_context(serve(create_api(settings)))
        dashboard = stack.enter_context(serve(create_dashboard(settings, tick_seconds=0.1)))
        yield api, dashboard


async def _both(
    bases: tuple[str, str], method: str, path: str, **kw: object
) -> list[httpx.Response]:
    answers = []
    for base in bases:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            answers.append(await http.request(method, path, **kw))  # type: ignore[arg-type]
    return answers


def _same(answers: list[httpx.Response], status: int) -> dict[str, object]:
    api, dashboard = answers
    assert api.status_code == dashboard.status_code == status, (api.text, dashboard.text)
    assert api.json() == dashboard.json()
    assert api.headers.get("retry-after") == dashboard.headers.get("retry-after")
    body: dict[str, object] = api.json()
    assert set(body) == {"error", "details"}
    return body


async def test_an_unknown_task_is_the_same_404(both: tuple[str, str]) -> None:
    task_id = str(uuid.uuid4())
    body = _same(await _both(both, "POST", f"/api/tasks/{task_id}/retry"), 404)
    assert body == {"error": f"task {task_id} not found", "details": []}


async def test_a_unique_key_held_by_another_task_is_the_same_409(
    both: tuple[str, str], conn: Conn, settings: Settings
) -> None:
    """The dashboard answered this one with a 500 while it had a table of its own."""
    [first], _ = await transitions.enqueue(conn, [create(unique_key="same-answer")], settings)
    await transitions.cancel(conn, first.id, settings)
    [second], _ = await transitions.enqueue(conn, [create(unique_key="same-answer")], settings)
    body = _same(await _both(both, "POST", f"/api/tasks/{first.id}/retry"), 409)
    assert body["details"] == [{"task_id": second.id}]


async def test_an_invalid_bulk_body_is_the_same_400(both: tuple[str, str]) -> None:
    body = _same(await _both(both, "POST", "/api/tasks/bulk", json={"action": "explode"}), 400)
    assert str(body["error"]).startswith("invalid request: action: ")


async def test_a_dashboard_stream_over_the_cap_is_a_429_as_on_the_api(
    both: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One page more than the cap is a 429 with Retry-After (the API's: test_limits.py)."""
    monkeypatch.setattr(dashboard_routes, "MAX_STREAMS", 1)
    async with (
        httpx.AsyncClient(base_url=both[1], timeout=10) as http,
        http.stream("GET", "/api/stream") as first,
    ):
        assert first.status_code == 200
        refused = await http.get("/api/stream")
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "5"
    assert refused.json() == {
        "error": "too many open dashboard streams (limit 1 per dashboard); close one or "
        "retry later",
        "details": [],
    }
