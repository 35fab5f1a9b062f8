"""Every key of a Redis (cluster or not) with its value: compare two to see that a refused
call wrote nothing. Service heartbeats are left out: a running service (the API under test
included) beats on its own, whatever the call did."""

from __future__ import annotations

from typing import Any

from shared.redis import Conn


async def snapshot(conn: Conn) -> dict[str, Any]:
    """{key: value} for every key but heartbeats, values read by type (a HASH as a dict, ...)."""
    found: dict[str, Any] = {}
    beats = (conn.keys.heartbeats(""), conn.keys.instance("", "").removesuffix(":"))
    async for key in conn.redis.scan_iter(match="*", count=1000):
        if key.startswith(beats):
            continue
        kind = await conn.redis.type(key)
        if kind == "hash":
            found[key] = await conn.redis.hgetall(key)
        elif kind == "list":
            found[key] = await conn.redis.lrange(key, 0, -1)
        elif kind == "set":
            found[key] = sorted(await conn.redis.smembers(key))
        elif kind == "zset":
            found[key] = await conn.redis.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            found[key] = await conn.redis.get(key)
        else:
            found[key] = kind
    return found
