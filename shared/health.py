"""The heartbeat health check behind `python -m services.<name>.health` (compose, k8s)."""

from __future__ import annotations

import asyncio
import sys
from typing import cast

from shared import codec
from shared.redis import create_redis
from shared.settings import get_settings


async def _alive(service: str, hostname: str | None) -> bool:
    settings = get_settings()
    conn = create_redis(settings)
    try:
        since = codec.now_ms() - int(settings.dead_after_seconds * 1000)
        key = conn.keys.heartbeats(service)
        members = cast("list[str]", await conn.redis.zrangebyscore(key, since, "+inf"))
    finally:
        await conn.aclose()
    # Instance ids are <service>-<host>-<pid>-<rand>: in a container, check this container's own.
    return any(hostname is None or m.startswith(f"{service}-{hostname}-") for m in members)


def check(service: str) -> None:
    """Exit 0 when an instance of `service` on this host beat recently, else 1."""
    import socket

    host = socket.gethostname() if "--any-host" not in sys.argv else None
    try:
        ok = asyncio.run(_alive(service, host))
    except Exception as exc:
        print(f"{service}: unhealthy: {exc}")
        sys.exit(1)
    print(f"{service}: {'healthy' if ok else 'no recent heartbeat'}")
    sys.exit(0 if ok else 1)
