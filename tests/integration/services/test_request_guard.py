"""Cross-site writes and DNS rebinding: the API (both create paths) and the dashboard refuse a
write whose Origin is another site, and, while bound to loopback, any unknown Host."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.dashboard.app import create_app as create_dashboard
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.api_server import serve
from tests.support.seed import counts, ensure_test_types, seed_tasks

BODY = {"type": "noop", "payload": {"n": 1}}
# No Idempotency-Key: services/api/fast_create.py answers; with one: the FastAPI route.
CREATE_PATHS = {"fast": {}, "route": {"Idempotency-Key": "guarded-1"}}
CROSS_SITE = [
    {"Origin": "http://evil.example"},
    {"Origin": "http://127.0.0.1:9999"},  # another port on this host is another origin
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
]
UNKNOWN_HOSTS = ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "10.0.0.1"]


def api_client(settings: Settings) -> TestClient:
    ensure_test_types()
    return TestClient(create_app(settings), base_url="http://127.0.0.1")


@pytest.fixture
def api(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    with api_client(settings) as client:
        yield client


def assert_refused(reply: Any, what: str) -> None:
    assert reply.status_code == 403, (what, reply.text)
    body = reply.json()
    assert body["error"] and isinstance(body["details"], list), body


@pytest.mark.parametrize("path", CREATE_PATHS)
@pytest.mark.parametrize("headers", CROSS_SITE, ids=lambda h: "-".join(h.values()))
async def test_cross_site_creates_are_refused_on_both_paths(
    api: TestClient, conn: Conn, path: str, headers: dict[str, str]
) -> None:
    for url in ("/api/tasks", "/tasks"):
        reply = api.post(url, json=BODY, headers={**CREATE_PATHS[path], **headers})
        assert_refused(reply, url)
    batch = api.post("/api/tasks/batch", json={"tasks": [BODY]}, headers=headers)
    assert_refused(batch, "batch")
    assert await counts(conn) == {}


@pytest.mark.parametrize("path", CREATE_PATHS)
@pytest.mark.parametrize("host", UNKNOWN_HOSTS)
async def test_unknown_hosts_are_refused_on_loopback_on_both_paths(
    api: TestClient, conn: Conn, path: str, host: str
) -> None:
    reply = api.post("/api/tasks", json=BODY, headers={**CREATE_PATHS[path], "Host": host})
    assert_refused(reply, host)
    for url in ("/api/tasks", "/api/health", "/api/stats", "/metrics", "/openapi.json"):
        assert_refused(api.get(url, headers={"Host": host}), url)
    assert await counts(conn) == {}


async def test_cross_site_cancel_and_retry_are_refused(
    api: TestClient, conn: Conn, settings: Settings
) -> None:
    [task] = await seed_tasks(conn, settings, scheduled_for=datetime.now(UTC) + timedelta(hours=1))
    before = await counts(conn)
    evil = {"Origin": "https://evil.example"}
    for method, url in (
        ("DELETE", f"/api/tasks/{task.id}"),
        ("POST", f"/api/tasks/{task.id}/retry"),
    ):
        assert_refused(api.request(method, url, headers=evil), url)
    assert await counts(conn) == before
    assert api.delete(f"/api/tasks/{task.id}").status_code == 200  # no Origin: a script


@pytest.mark.parametrize("path", CREATE_PATHS)
def test_same_origin_and_loopback_names_are_served(api: TestClient, path: str) -> None:
    allowed: list[dict[str, str]] = [
        {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"},
        {"Host": "localhost:8080", "Origin": "http://localhost:8080"},
        {"Host": "LOCALHOST"},
        {"Host": "127.5.6.7:1"},
        {"Host": "tasks.localhost:8080", "Origin": "http://tasks.localhost:8080"},
        {"Host": "[::1]:8080", "Origin": "http://[::1]:8080"},
        {"Sec-Fetch-Site": "none"},
    ]
    for number, headers in enumerate(allowed):
        key = {"Idempotency-Key": f"ok-{number}"} if path == "route" else {}
        reply = api.post("/api/tasks", json=BODY, headers={**key, **headers})
        assert reply.status_code == 201, (headers, reply.text)
    # Reads stay open to other sites (the Host check still applies to them).
    read = api.get("/api/tasks", headers={"Origin": "http://evil.example"})
    assert read.status_code == 200


def test_a_proxy_that_rewrites_host_keeps_same_origin_writes(api: TestClient) -> None:
    proxied = {"X-Forwarded-Host": "tasks.example", "Origin": "https://tasks.example"}
    assert api.post("/api/tasks", json=BODY, headers=proxied).status_code == 201
    forged = {"X-Forwarded-Host": "tasks.example", "Origin": "https://evil.example"}
    assert_refused(api.post("/api/tasks", json=BODY, headers=forged), "forwarded")


async def test_allowed_hosts_are_served_on_loopback(conn: Conn, settings: Settings) -> None:
    behind_proxy = make_settings(settings.redis_url, allowed_hosts="tasks.example.com")
    with api_client(behind_proxy) as api:
        named = {"Host": "tasks.example.com", "Origin": "https://tasks.example.com"}
        assert api.post("/api/tasks", json=BODY, headers=named).status_code == 201
        assert_refused(api.get("/api/tasks", headers={"Host": "evil.example"}), "evil")
        assert_refused(api.get("/api/tasks", headers={"Host": "testserver"}), "testserver")
    assert (await counts(conn))["total"] == 1


async def test_bound_to_all_interfaces_any_host_is_served_but_not_cross_site(
    conn: Conn, settings: Settings
) -> None:
    everywhere = make_settings(settings.redis_url, bind_host="0.0.0.0")
    with api_client(everywhere) as api:
        named = {"Host": "tasks.example:8080"}
        assert api.post("/api/tasks", json=BODY, headers=named).status_code == 201
        assert api.get("/api/tasks", headers=named).status_code == 200
        for path, extra in CREATE_PATHS.items():
            evil = {**named, **extra, "Origin": "http://evil.example"}
            assert_refused(api.post("/api/tasks", json=BODY, headers=evil), path)
    assert (await counts(conn))["total"] == 1


async def test_dashboard_refuses_cross_site_writes_and_unknown_hosts(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    [task] = await seed_tasks(conn, settings, scheduled_for=datetime.now(UTC) + timedelta(hours=1))
    before = await counts(conn)
    with serve(create_dashboard(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for headers in [*CROSS_SITE, {"Host": "evil.example"}]:
                for url in (f"/api/tasks/{task.id}/cancel", f"/api/tasks/{task.id}/retry"):
                    assert_refused(await http.post(url, headers=headers), url)
                assert_refused(
                    await http.post("/api/login", json={"key": "k"}, headers=headers), "login"
                )
            for url in ("/", "/api/snapshot", "/healthz", "/static/js/main.js"):
                assert_refused(await http.get(url, headers={"Host": "evil.example"}), url)
            assert (await http.get("/api/snapshot", headers=CROSS_SITE[0])).status_code == 200
            assert await counts(conn) == before
            same = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
            done = await http.post(f"/api/tasks/{task.id}/cancel", headers=same)
            assert done.status_code == 200, done.text
