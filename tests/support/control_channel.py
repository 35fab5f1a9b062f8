"""Read QUEUE_CONTROL_CHANNEL in tests: every message, decoded, from a subscription that Redis
has confirmed before the test goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from shared.events import subscribe
from shared.keys import QUEUE_CONTROL_CHANNEL
from shared.redis import Conn

SENTINEL = {"queue": "-", "event": "sentinel"}


@contextlib.asynccontextmanager
async def control_messages(conn: Conn) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """The control channel's messages, in order, from once Redis confirmed the SUBSCRIBE."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    subscribed = asyncio.Event()

    async def read() -> None:
        async for raw in subscribe(conn, QUEUE_CONTROL_CHANNEL, subscribed=subscribed):
            received.put_nowait(json.loads(raw))

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(subscribed.wait(), 5)
        yield received
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def next_message(received: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(received.get(), 5)


async def assert_silent(conn: Conn, received: asyncio.Queue[dict[str, Any]]) -> None:
    """Nothing was published since the last message read: a sentinel published now is next."""
    await conn.redis.publish(QUEUE_CONTROL_CHANNEL, json.dumps(SENTINEL))
    assert await next_message(received) == SENTINEL
