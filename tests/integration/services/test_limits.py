"""Every limit answers with a clear JSON error: body size, batch size, payload size, open
event streams; and the notifier reads at most MAX_RESPONSE_BYTES of a webhook's reply."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.api.routes.events import MAX_STREAMS
from services.api.schemas import MAX_BATCH
from shared.models import MAX_PAYLOAD_BYTES
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.api_server import serve
from tests.support.seed import ensure_test_types
from tests.support.waiting import wait_until_sync


@pytest.fixture
def small_body(settings: Settings, conn: object) -> Settings:
    return make_settings(settings.redis_url, max_body_bytes=4096)


@pytest.fixture
def client(small_body: Settings) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(small_body)) as test_client:
        yield test_client


def assert_error(response: httpx.Response, status: int, needle: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert needle in body["error"] and isinstance(body["details"], list), body
    return body


def total(client: TestClient) -> int:
    return int(client.get("/api/stats").json()["total_tasks"])


def test_body_over_max_body_bytes_is_413_announced_or_streamed(small_body: Settings) -> None:
    ensure_test_types()
    big = b'{"type": "noop", "payload": "' + b"x" * 5000 + b'"}'
    with serve(create_app(small_body)) as base, httpx.Client(base_url=base) as http:
        headers = {"content-type": "application/json"}
        announced = http.post("/api/tasks", content=big, headers=headers)
        assert_error(announced, 413, "larger than 4096 bytes")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        streamed = http.post("/api/tasks", content=chunks(), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "larger than 4096 bytes")
        assert http.get("/api/stats").json()["total_tasks"] == 0
        small = http.post("/api/tasks", json={"type": "noop", "payload": 1})
        assert small.status_code == 201


def test_batch_over_the_limit_is_400_and_writes_nothing(settings: Settings, conn: object) -> None:
    ensure_test_types()
    with TestClient(create_app(settings)) as client:
        body = {"tasks": [{"type": "noop", "payload": 1}] * (MAX_BATCH + 1)}
        assert_error(client.post("/api/tasks/batch", json=body), 400, "at most 1000 items")
        assert total(client) == 0
        body = {"tasks": [{"type": "noop", "payload": 1}] * MAX_BATCH}
        assert client.post("/api/tasks/batch", json=body).status_code == 201
        assert total(client) == MAX_BATCH


def test_payload_over_64_kib_is_400_even_inside_a_small_enough_body(
    settings: Settings, conn: object
) -> None:
    ensure_test_types()
    with TestClient(create_app(settings)) as client:
        just_over = "x" * (MAX_PAYLOAD_BYTES - 1)  # + 2 quotes = limit + 1 bytes serialised
        response = client.post("/api/tasks", json={"type": "noop", "payload": just_over})
        body = assert_error(response, 400, f"the limit is {MAX_PAYLOAD_BYTES}")
        assert body["details"][0]["loc"] == ["body", "payload"]
        batch = {"tasks": [{"type": "noop", "payload": 1}, {"type": "noop", "payload": just_over}]}
        assert_error(client.post("/api/tasks/batch", json=batch), 400, "payload is")
        assert total(client) == 0
        at_limit = "x" * (MAX_PAYLOAD_BYTES - 2)
        assert (
            client.post("/api/tasks", json={"type": "noop", "payload": at_limit}).status_code == 201
        )


def test_open_event_streams_are_capped_with_429_and_freed_on_disconnect(
    settings: Settings, conn: object
) -> None:
    assert MAX_STREAMS >= 100
    app = create_app(settings)
    app.state.max_streams = 2
    with serve(app) as base, httpx.Client(base_url=base, timeout=5) as http:
        streams = [http.stream("GET", "/api/events") for _ in range(2)]
        readers = []  # kept referenced: a dropped line iterator closes its stream
        for stream in streams:
            response = stream.__enter__()
            assert response.status_code == 200
            readers.append(response.iter_lines())
            assert next(readers[-1]).startswith("retry:")
        wait_until_sync(lambda: app.state.open_streams == 2, message="two open streams")
        refused = http.get("/api/events")
        assert_error(refused, 429, "too many open event streams (limit 2")
        assert refused.headers["retry-after"] == "5"
        assert http.get("/api/stats").status_code == 200  # other routes are unaffected
        streams[0].__exit__(None, None, None)
        wait_until_sync(lambda: app.state.open_streams < 2, message="the closed stream to count")
        with http.stream("GET", "/api/events") as again:
            assert again.status_code == 200
        streams[1].__exit__(None, None, None)
    spec = TestClient(app).get("/openapi.json").json()
    assert "429" in spec["paths"]["/api/events"]["get"]["responses"]


def test_stream_cap_holds_under_concurrent_connects(settings: Settings, conn: object) -> None:
    app = create_app(settings)
    app.state.max_streams = 3
    codes: list[int] = []
    release = threading.Event()

    def connect(http: httpx.Client) -> None:
        with http.stream("GET", "/api/events") as response:
            codes.append(response.status_code)
            if response.status_code == 200:
                release.wait(10)

    with serve(app) as base, httpx.Client(base_url=base, timeout=5) as http:
        threads = [threading.Thread(target=connect, args=(http,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        wait_until_sync(lambda: len(codes) == 8, message="every connect answered")
        release.set()
        for thread in threads:
            thread.join(10)
    assert sorted(codes) == [200] * 3 + [429] * 5, codes


async def test_webhook_response_bytes_read_are_capped(settings: Settings) -> None:
    """An endless webhook reply ends the read at MAX_RESPONSE_BYTES, well before the timeout."""
    from services.notifier.webhooks import MAX_RESPONSE_BYTES, HttpPoster

    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        try:
            while sent < 100 * MAX_RESPONSE_BYTES:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass
        writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poster = HttpPoster(settings.model_copy(update={"webhook_timeout_seconds": 20}))
    try:
        result = await poster.post(f"http://127.0.0.1:{port}/hook", b"{}", {})
    finally:
        await poster.aclose()
        server.close()
    assert result.ok and result.duration_ms < 5000, result
    assert sent < 100 * MAX_RESPONSE_BYTES  # the reader stopped; the server did not finish
