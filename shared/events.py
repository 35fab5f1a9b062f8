"""Subscribing to `task_events` (SPEC section 6) and to the scheduler's wake-up channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

from shared.keys import EVENTS_CHANNEL
from shared.redis import Conn


async def subscribe(conn: Conn, channel: str = EVENTS_CHANNEL) -> AsyncIterator[str]:
    """Yield raw JSON messages published on a channel until the caller stops iterating."""
    pubsub = conn.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    try:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                yield str(message["data"])
    finally:
        await pubsub.unsubscribe(channel)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
