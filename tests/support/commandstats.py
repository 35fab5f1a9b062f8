"""How many script calls Redis served (INFO commandstats), to count round trips in tests."""

from __future__ import annotations

from typing import Any

from shared.redis import Conn

SCRIPT_COMMANDS = ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_eval")


async def _per_node(conn: Conn) -> list[dict[str, Any]]:
    if conn.topology == "cluster":
        replies = await conn.redis.info("commandstats", target_nodes=conn.redis.PRIMARIES)
        return list(replies.values())
    return [await conn.redis.info("commandstats")]


async def script_calls(conn: Conn) -> int:
    """FCALL, EVALSHA and EVAL calls so far, summed over a cluster's primaries."""
    return await command_calls(conn, *(name.removeprefix("cmdstat_") for name in SCRIPT_COMMANDS))


async def command_calls(conn: Conn, *names: str) -> int:
    """Calls of the named commands (lower case, e.g. 'lpop') so far, scripts' own included,
    summed over a cluster's primaries."""
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for stats in await _per_node(conn)
        for name in names
    )
