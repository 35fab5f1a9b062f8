"""Wait for a pub/sub subscription that Redis has processed, instead of sleeping for it."""

from __future__ import annotations

from shared.redis import Conn
from tests.support.waiting import wait_until


async def subscribers(conn: Conn, channel: str) -> int:
    """How many clients Redis counts as subscribed to `channel` (PUBSUB NUMSUB)."""
    return int(dict(await conn.redis.pubsub_numsub(channel))[channel])


async def wait_subscribed(conn: Conn, channel: str, count: int = 1, timeout: float = 5.0) -> None:
    """Return once at least `count` clients are subscribed to `channel`: a message published
    after that reaches each of them."""

    async def enough() -> bool:
        return await subscribers(conn, channel) >= count

    await wait_until(enough, timeout=timeout, message=f"{count} subscriber(s) on {channel}")
