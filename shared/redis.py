"""Redis connections and the transition scripts, loaded once per client at service start."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import codec
from shared.errors import RedisUnavailable
from shared.keys import Keys
from shared.settings import Settings

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "complete",
    "fail",
    "requeue",
    "promote_due",
    "cancel",
    "retry_failed",
    "purge_expired",
    "claim_deliveries",
    "record_delivery",
    "configure_queue",
)

T = TypeVar("T")
CLOCK_SYNC_SECONDS = 10.0  # how long a reading of the server's clock offset is trusted


def _script_source(name: str) -> str:
    folder = resources.files("shared") / "scripts"
    return (folder / "_lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


@dataclass
class Conn:
    """A Redis client with the key schema and every transition script registered on it."""

    redis: aioredis.Redis
    keys: Keys
    scripts: dict[str, AsyncScript]
    _queues: dict[str, Keys] = field(default_factory=dict, repr=False)
    _registered: dict[str, float] = field(default_factory=dict, repr=False)  # queues.register
    # The server's clock minus this host's, in ms, and when (monotonic) it was read.
    _clock_offset_ms: float = field(default=0.0, repr=False)
    _clock_read_at: float = field(default=float("-inf"), repr=False)

    def queue(self, name: str | None) -> Keys:
        """The keys of queue `name` (None: this connection's default queue, QUEUE_NAME)."""
        if name is None or name == self.keys.queue:
            return self.keys
        keys = self._queues.get(name)
        if keys is None:
            keys = self._queues[name] = Keys(name)
        return keys

    @property
    def clock_offset_ms(self) -> float:
        """Redis's clock minus this host's (ms), as last read by `server_ms`."""
        return self._clock_offset_ms

    async def server_ms(self) -> int:
        """Now by Redis's clock (epoch ms). Liveness (heartbeats, lease deadlines) is stamped
        and judged with it, so a host whose clock is off by seconds is not declared dead, nor
        a dead one kept. The offset to this host's clock is read with TIME at most every
        CLOCK_SYNC_SECONDS; its error is half a round trip."""
        if time.monotonic() - self._clock_read_at > CLOCK_SYNC_SECONDS:
            before = codec.now_ms()
            seconds, micros = await guarded(self.redis.time())
            after = codec.now_ms()
            self._clock_offset_ms = seconds * 1000 + micros / 1000 - (before + after) / 2
            self._clock_read_at = time.monotonic()
        return int(codec.now_ms() + self._clock_offset_ms)

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script, so a broken script fails at boot, not at first use."""
        for script in self.scripts.values():
            script.sha = await guarded(self.redis.script_load(script.script))

    async def aclose(self) -> None:
        await self.redis.aclose()


def create_redis(settings: Settings, **overrides: Any) -> Conn:
    """Build the client every service uses: decoded strings, health checks, bounded timeouts."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 15,
        "socket_connect_timeout": 3,
        "socket_keepalive": True,
        "retry_on_timeout": False,
        "max_connections": 256,
        # After a Redis restart every pooled connection is dead; retry once on a fresh one
        # instead of failing one request per stale connection. The short backoff cannot span
        # a restart, so a command is never re-sent to a server that may have run it.
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
    }
    options.update(overrides)
    client = aioredis.Redis.from_url(settings.redis_url, **options)
    scripts = {name: client.register_script(_script_source(name)) for name in SCRIPT_NAMES}
    return Conn(redis=client, keys=Keys(settings.queue_name), scripts=scripts)


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Conn]:
    """A Conn with its scripts loaded, closed on exit."""
    conn = create_redis(settings)
    try:
        await conn.load_scripts()
        yield conn
    finally:
        await conn.aclose()


async def guarded(call: Awaitable[T]) -> T:
    """Await a Redis call, turning connection trouble into RedisUnavailable."""
    try:
        return await call
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
        raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
    except RedisError as exc:
        # Loading its data, refusing writes after a failed save, or full under noeviction:
        # Redis, not the request, is the trouble (503, and a worker's report is retried).
        text = str(exc)
        if "> 'maxmemory'" in text:
            raise RedisUnavailable(f"Redis is full: {text}") from exc
        if "LOADING" in text or "MISCONF" in text:
            raise RedisUnavailable(text) from exc
        raise
