"""`GET /api/events` at scale: one shared subscription, cheap filtering, and no stream holding
back another."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from services.api.routes import events as events_route
from shared import codec
from shared.keys import EVENTS_CHANNEL
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.api_server import serve
from tests.support.redis_server import free_port
from tests.support.seed import ensure_test_types
from tests.support.waiting import wait_until

POOL = 8  # the API's Redis pool, shrunk so that a connection per stream would exhaust it
STREAMS = 3 * POOL


async def numsub(conn: Conn, channel: str = EVENTS_CHANNEL) -> int:
    """Subscribers Redis counts on a channel (a SUBSCRIBE it has processed)."""
    return int(dict(await conn.redis.pubsub_numsub(channel))[channel])


async def next_data(lines: AsyncIterator[str]) -> str:
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("the stream ended")


async def create(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/tasks", json={"type": "noop", "payload": {"n": 1}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def raw_event(task_id: str, **fields: Any) -> str:
    """An event as the scripts publish it (compact JSON, `at_ms`)."""
    body = {"event": "task.failed", "task_id": task_id, "status": "failed", "at_ms": codec.now_ms()}
    return json.dumps({**body, **fields}, separators=(",", ":"))


async def test_open_streams_share_one_subscription_and_leave_the_pool_to_other_routes(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    app = create_app(settings)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    with serve(app) as base:
        app.state.conn.redis.connection_pool.max_connections = POOL
        async with (
            httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http,
            AsyncExitStack() as streams,
        ):
            readers = []
            for _ in range(STREAMS):
                response = await streams.enter_async_context(http.stream("GET", "/api/events"))
                assert response.status_code == 200
                lines = response.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                readers.append(lines)
            # Subscribed before the first line: no wait needed, and one subscriber for all.
            assert await numsub(conn) == 1
            stats = await http.get("/api/stats")
            assert stats.status_code == 200, stats.text
            task_id = await create(http)
            for lines in readers:
                assert task_id in await asyncio.wait_for(next_data(lines), 5)
        await wait_until(lambda: _numsub_is(conn, 0), message="the last stream to unsubscribe")


async def _numsub_is(conn: Conn, expected: int) -> bool:
    return await numsub(conn) == expected


async def _numsub_at_least(conn: Conn, expected: int) -> bool:
    return await numsub(conn) >= expected


async def test_a_filtered_stream_gets_only_its_task_and_decodes_only_candidates(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_test_types()
    decoded: list[str] = []
    decode = codec.decode_event

    def counting(raw: str | bytes) -> Any:
        decoded.append(str(raw))
        return decode(raw)

    monkeypatch.setattr(codec, "decode_event", counting)
    app = create_app(settings)
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            mine, other = await create(http), await create(http)
            params = {"task_id": mine}
            async with http.stream("GET", "/api/events", params=params) as response:
                lines = response.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                await wait_until(lambda: _numsub_is(conn, 1), message="the stream's subscription")
                assert (await http.delete(f"/api/tasks/{other}")).status_code == 200
                decoy = raw_event(other, error=f"mentions {mine} but is not about it")
                await conn.redis.publish(EVENTS_CHANNEL, decoy)
                assert (await http.delete(f"/api/tasks/{mine}")).status_code == 200
                line = await asyncio.wait_for(next_data(lines), 5)
    assert json.loads(line.removeprefix("data:"))["task_id"] == mine
    assert "task.cancelled" in line
    # The other task's cancel never contained `mine`, so it was never decoded; the decoy was
    # a candidate (it contains the id) and was decoded, then dropped.
    assert len(decoded) == 2 and decoded[0] == decoy and mine in decoded[1], decoded


async def test_an_undecodable_message_is_skipped_not_fatal(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    with serve(create_app(settings)) as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            http.stream("GET", "/api/events") as response,
        ):
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            await wait_until(lambda: _numsub_is(conn, 1), message="the stream's subscription")
            await conn.redis.publish(EVENTS_CHANNEL, "not json")
            await conn.redis.publish(EVENTS_CHANNEL, '{"task_id": "no other field"}')
            task_id = await create(http)
            assert task_id in await asyncio.wait_for(next_data(lines), 5)


class RawStream:
    """An event stream read through a plain socket with a tiny receive buffer: a client that
    stops reading fills it (and the server's send buffer) quickly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.received = b""
        while b"retry:" not in self.received:
            self.received += self.sock.recv(4096)

    def read_to_end(self, timeout: float) -> bytes:
        """Everything until the server ends the response (chunked: the zero-size last chunk)."""
        self.sock.settimeout(timeout)
        while not self.received.endswith(b"\r\n0\r\n\r\n"):
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                break
            self.received += chunk
        return self.received


async def test_a_slow_stream_is_closed_and_never_holds_back_a_fast_one(
    conn: Conn, settings: Settings
) -> None:
    """The slow client stops reading. The fast one gets every event, round after round, while
    the slow one's backlog grows past its limit; then the slow one is closed (it must
    reconnect and re-read), instead of buffering without end."""
    app = create_app(settings)
    app.state.stream_backlog = 20
    big = "x" * 32_768  # big events fill the slow client's socket buffers in a few rounds
    with serve(app) as base:
        port = int(base.rsplit(":", 1)[1])
        slow = await asyncio.to_thread(RawStream, port)
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            http.stream("GET", "/api/events") as response,
        ):
            fast = response.aiter_lines()
            assert (await anext(fast)).startswith("retry:")
            await wait_until(lambda: _numsub_at_least(conn, 1), message="the subscription")
            sent = 0
            for _ in range(40):  # 40 rounds of 10 x 32 KiB: 13 MB, past any socket buffers
                batch = [raw_event(f"t-{sent + n}", error=big) for n in range(10)]
                async with conn.redis.pipeline(transaction=False) as pipe:
                    for raw in batch:
                        pipe.publish(EVENTS_CHANNEL, raw)
                    await pipe.execute()
                for n in range(10):
                    line = await asyncio.wait_for(next_data(fast), 5)
                    assert f'"task_id":"t-{sent + n}"' in line
                sent += len(batch)
        received = await asyncio.to_thread(slow.read_to_end, 10)
    assert received.endswith(b"\r\n0\r\n\r\n"), "the slow stream was never closed"
    assert received.count(b"event: task.failed") < sent
    assert b": closed" in received


async def test_a_stream_opened_while_redis_is_down_answers_503(conn: Conn) -> None:
    app = create_app(make_settings(f"redis://127.0.0.1:{free_port()}/0"))
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            response = await http.get("/api/events")
    assert response.status_code == 503, response.text
    assert "redis" in response.json()["error"].lower()


async def test_streams_end_when_the_subscription_is_lost_and_new_ones_resubscribe(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    with serve(create_app(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            async with http.stream("GET", "/api/events") as response:
                lines = response.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                await wait_until(lambda: _numsub_is(conn, 1), message="the subscription")
                await conn.redis.client_kill_filter(_type="pubsub")
                rest = [line async for line in lines]  # ends, cleanly, with a closing note
            assert any(line.startswith(": closed") for line in rest), rest
            async with http.stream("GET", "/api/events") as response:
                lines = response.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                task_id = await create(http)
                assert task_id in await asyncio.wait_for(next_data(lines), 5)


async def test_a_quiet_stream_sends_keep_alives(
    conn: Conn, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_route, "KEEPALIVE_SECONDS", 0.05)
    with serve(create_app(settings)) as base:
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as http,
            http.stream("GET", "/api/events") as response,
        ):
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            quiet = [await anext(lines) for _ in range(4)]  # blank lines end each comment
    assert quiet.count(": keep-alive") >= 2, quiet
