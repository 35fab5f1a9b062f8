"""The api's heartbeat: each API process beats as every other service does, so
`taskqueue_instances{service="api"}` on /metrics counts the live API replicas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from shared import heartbeats
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.runtime import every, instance_id
from shared.settings import Settings

logger = logging.getLogger(__name__)

SERVICE = "api"


@contextlib.asynccontextmanager
async def beating(conn: Conn, settings: Settings) -> AsyncIterator[None]:
    """Beat every HEARTBEAT_SECONDS while the block runs; leave the heartbeat set at its end,
    so a stopped API stops counting at once."""
    iid = instance_id(SERVICE)
    info = {"pid": os.getpid(), "host": socket.gethostname()}
    timeout = max(settings.heartbeat_seconds * 2, 1.0)

    async def beat() -> None:
        try:
            # Cut short when Redis does not answer, so the beats go on through an outage.
            async with asyncio.timeout(timeout):
                await heartbeats.beat(conn, SERVICE, iid, info, settings.heartbeat_seconds * 5)
        except (RedisUnavailable, RedisError, OSError, TimeoutError) as exc:
            # Redis is down or not up yet: the routes answer 503 and say so; beat again later.
            logger.debug("heartbeat failed: %s", exc)

    stop = asyncio.Event()
    loop = asyncio.create_task(
        every(stop, settings.heartbeat_seconds, beat, "heartbeat"), name="api-heartbeat"
    )
    try:
        yield
    finally:
        stop.set()
        await loop
        # Bounded: a Redis that is down must not hold up the shutdown (the entry then
        # ages out after DEAD_AFTER_SECONDS, as a killed process's does).
        with contextlib.suppress(RedisUnavailable, RedisError, OSError, TimeoutError):
            async with asyncio.timeout(timeout):
                await heartbeats.leave(conn, SERVICE, iid)
