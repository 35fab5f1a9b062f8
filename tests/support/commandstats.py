"""How many script calls Redis served (INFO commandstats), to count round trips in tests."""

from __future__ import annotations

from typing import Any

from shared.redis import Conn

SCRIPT_COMMANDS = ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_eval")


async def script_calls(conn: Conn) -> int:
    """FCALL, EVALSHA and EVAL calls so far, summed over a cluster's primaries."""
    if conn.topology == "cluster":
        replies = await conn.redis.info("commandstats", target_nodes=conn.redis.PRIMARIES)
        per_node: list[dict[str, Any]] = list(replies.values())
    else:
        per_node = [await conn.redis.info("commandstats")]
    return sum(
        int(stats.get(name, {}).get("calls", 0)) for stats in per_node for name in SCRIPT_COMMANDS
    )
