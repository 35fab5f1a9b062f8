"""Every invalid request of SPEC section 3 gets a 400 JSON error before Redis is touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.settings import Settings
from tests.support.seed import ensure_test_types

# Nothing listens here: a request that reached Redis would answer 503, not 400.
UNREACHABLE = "redis://127.0.0.1:1/0"
LOOPBACK = "http://127.0.0.1"  # the services bind to loopback and refuse other Host names


@pytest.fixture
def client() -> Iterator[TestClient]:
    ensure_test_types()
    settings = Settings(redis_url=UNREACHABLE, max_body_bytes=4096, _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    with TestClient(app, base_url=LOOPBACK, raise_server_exceptions=False) as test_client:
        yield test_client


BAD_BODIES: list[tuple[str, Any]] = [
    ("missing type", {"payload": "a@b.co"}),
    ("missing payload", {"type": "noop"}),
    ("unknown field", {"type": "noop", "payload": 1, "colour": "red"}),
    ("type not a string", {"type": 5, "payload": 1}),
    ("empty type", {"type": "", "payload": 1}),
    ("unknown type", {"type": "teleport", "payload": 1}),
    ("priority too high", {"type": "noop", "payload": 1, "priority": 6}),
    ("priority too low", {"type": "noop", "payload": 1, "priority": 0}),
    ("priority as string", {"type": "noop", "payload": 1, "priority": "5"}),
    ("priority as float", {"type": "noop", "payload": 1, "priority": 2.5}),
    ("priority as bool", {"type": "noop", "payload": 1, "priority": True}),
    ("max_retries negative", {"type": "noop", "payload": 1, "max_retries": -1}),
    ("max_retries too high", {"type": "noop", "payload": 1, "max_retries": 11}),
    ("naive scheduled_for", {"type": "noop", "payload": 1, "scheduled_for": "2025-12-06T18:30:00"}),
    ("garbage scheduled_for", {"type": "noop", "payload": 1, "scheduled_for": "tomorrow"}),
    ("webhook not a URL", {"type": "noop", "payload": 1, "webhook": "not a url"}),
    ("webhook ftp", {"type": "noop", "payload": 1, "webhook": "ftp://example.com/x"}),
    ("webhook private literal", {"type": "noop", "payload": 1, "webhook": "http://10.0.0.1/x"}),
    ("webhook loopback literal", {"type": "noop", "payload": 1, "webhook": "http://127.0.0.1:9/x"}),
    ("webhook link-local", {"type": "noop", "payload": 1, "webhook": "http://169.254.169.254/"}),
    ("webhook ipv6 loopback", {"type": "noop", "payload": 1, "webhook": "http://[::1]/"}),
    ("email bad address", {"type": "email", "payload": "not-an-address"}),
    ("email object missing subject", {"type": "email", "payload": {"to": "a@b.co", "text": "x"}}),
    ("email wrong type", {"type": "email", "payload": 42}),
    ("webhook task private target", {"type": "webhook", "payload": "http://192.168.1.1/hook"}),
    ("webhook task bad payload", {"type": "webhook", "payload": {"body": 1}}),
    ("timeout zero", {"type": "noop", "payload": 1, "timeout_seconds": 0}),
    ("payload over 64 KiB", {"type": "noop", "payload": "x" * (65 * 1024)}),
    ("body not an object", [1, 2, 3]),
]


@pytest.mark.parametrize(("case", "body"), BAD_BODIES, ids=[case for case, _ in BAD_BODIES])
def test_create_rejects_bad_body_with_json_400(client: TestClient, case: str, body: Any) -> None:
    response = client.post("/api/tasks", json=body)
    assert response.status_code in (400, 413), (case, response.text)
    data = response.json()
    assert isinstance(data["error"], str) and data["error"]
    assert isinstance(data["details"], list)


def test_unknown_type_lists_known_types(client: TestClient) -> None:
    response = client.post("/api/tasks", json={"type": "teleport", "payload": 1})
    assert response.status_code == 400
    assert "email" in response.json()["error"] and "image" in response.json()["error"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/api/tasks", content=b'{"type": "noop", ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "malformed JSON body"


def test_body_over_limit_is_413(client: TestClient) -> None:
    response = client.post(
        "/api/tasks", content=b"x" * 5000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]


@pytest.mark.parametrize("body", [{"tasks": []}, {"tasks": "x"}, {}, {"tasks": [{"type": "noop"}]}])
def test_batch_rejects_bad_bodies(client: TestClient, body: Any) -> None:
    response = client.post("/api/tasks/batch", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


def test_batch_over_1000_is_400(client: TestClient) -> None:
    client.app.state.settings.max_body_bytes = 1 << 22  # type: ignore[attr-defined]
    body = {"tasks": [{"type": "noop", "payload": 1}] * 1001}
    assert client.post("/api/tasks/batch", json=body).status_code in (400, 413)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "limit=abc", "status=done", "cursor=%%%", "type=" + "x" * 101]
)
def test_list_rejects_bad_query(client: TestClient, query: str) -> None:
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_redis_down_is_503_json(client: TestClient) -> None:
    for method, path in (
        ("GET", "/api/stats"),
        ("GET", f"/api/tasks/{uuid.uuid4()}"),
        ("GET", "/api/health"),
    ):
        response = client.request(method, path)
        assert response.status_code == 503, (path, response.text)
        body = response.json()
        assert body.get("error") or body.get("status") == "degraded"
    created = client.post("/api/tasks", json={"type": "noop", "payload": 1})
    assert created.status_code == 503 and "redis unavailable" in created.json()["error"]


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404 and response.json()["error"]


def test_api_keys_required_when_set() -> None:
    settings = Settings(redis_url=UNREACHABLE, api_keys="k1,k2", api_read_keys="ro", _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    with TestClient(app, base_url=LOOPBACK, raise_server_exceptions=False) as client:
        assert client.get("/api/stats").status_code == 401
        assert (
            client.get("/api/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert client.get("/tasks", headers={"Authorization": "Bearer k2"}).status_code == 503
        assert client.get("/api/tasks", headers={"Authorization": "Bearer ro"}).status_code == 503
        write = client.post(
            "/api/tasks",
            json={"type": "noop", "payload": 1},
            headers={"Authorization": "Bearer ro"},
        )
        assert write.status_code == 403
        assert client.get("/api/health").status_code == 503  # open, but Redis is down
        assert client.get("/metrics").status_code == 401
        assert "error" in client.get("/api/stats").json()


# Every route that reads a body, with and without the /api prefix (SPEC section 3).
BODY_ROUTES = [
    ("POST", "/api/tasks"),
    ("POST", "/tasks"),
    ("POST", "/api/tasks/batch"),
    ("POST", "/api/tasks/bulk"),
    ("PUT", "/api/queues/x/limits"),
    ("PUT", "/queues/x/limits"),
    ("PUT", "/api/schedules/nightly"),
]
UNREADABLE_BODIES = [b"garbage", b'{"type": "noop", ', b"\xff\xfe{}", b'{"type": 5}']


@pytest.fixture
def keyed_client() -> Iterator[TestClient]:
    ensure_test_types()
    settings = Settings(redis_url=UNREACHABLE, api_keys="k1", api_read_keys="ro", _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings), base_url=LOOPBACK, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("body", UNREADABLE_BODIES)
def test_the_key_is_checked_before_the_body_is_read(
    keyed_client: TestClient, method: str, path: str, body: bytes
) -> None:
    def send(**headers: str) -> Any:
        headers["content-type"] = "application/json"
        return keyed_client.request(method, path, content=body, headers=headers)

    for refused in (send(), send(authorization="Bearer wrong"), send(authorization="k1")):
        assert refused.status_code == 401, refused.text
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert refused.json()["error"] and refused.json()["details"] == []
    read_only = send(authorization="Bearer ro")
    assert read_only.status_code == 403, read_only.text
    admitted = send(authorization="Bearer k1")
    assert admitted.status_code == 400, admitted.text  # now the body's own answer
    assert admitted.json()["error"]


def test_the_key_is_checked_before_the_query_is_read(keyed_client: TestClient) -> None:
    assert keyed_client.get("/api/tasks?limit=abc").status_code == 401
    assert keyed_client.get("/api/stats?queue=Not%20A%20Queue").status_code == 401
    ok_key = {"authorization": "Bearer ro"}
    assert keyed_client.get("/api/tasks?limit=abc", headers=ok_key).status_code == 400
