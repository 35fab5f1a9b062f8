"""Wait for a pub/sub subscription that Redis has processed, instead of sleeping for it."""

from __future__ import annotations

from shared.redis import Conn
from tests.support.waiting import wait_until


async def subscribers(conn: Conn, channel: str) -> int:
    """How many clients Redis counts as subscribed to `channel` (PUBSUB NUMSUB)."""
    if conn.topology == "cluster":
        # A subscriber of a classic channel sits on one node of a cluster: count on each.
        replies = await conn.redis.pubsub_numsub(channel, target_nodes=conn.redis.ALL_NODES)
        if isinstance(replies, dict):
            return sum(int(dict(reply)[channel]) for reply in replies.values())
        return sum(int(n) for name, n in replies if name == channel)
    return int(dict(await conn.redis.pubsub_numsub(channel))[channel])


async def wait_subscribed(conn: Conn, channel: str, count: int = 1, timeout: float = 5.0) -> None:
    """Return once at least `count` clients are subscribed to `channel`: a message published
    after that reaches each of them."""

    async def enough() -> bool:
        return await subscribers(conn, channel) >= count

    await wait_until(enough, timeout=timeout, message=f"{count} subscriber(s) on {channel}")
