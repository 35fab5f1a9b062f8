"""Registered scripts run on a connection of their own, with the least client work.

redis-py's command path costs about as much Python per call as a script costs Redis: pool
checkout, retry and metrics wrappers, generic argument packing and, with a socket timeout
set, an `asyncio.wait_for` task around every write. A caller that makes one script call at
a time and pays it per task (the producer enqueuing one task at a time, a worker reporting
and claiming one task at a time) uses a ScriptConnection instead: a call is one packed
FCALL/EVALSHA written and one reply read, under one deadline (the client's socket timeout).
Connecting (TLS, AUTH, SELECT), health checks and the retry policy are still redis-py's,
built from the client's own pool settings. Standalone Redis only: on Sentinel and Cluster
the client's own path follows failovers and slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis import Conn, is_missing_script

ScriptArg = str | int | float
ScriptCall = Callable[[Sequence[str], Sequence[ScriptArg]], Awaitable[Any]]


def _bulk(item: ScriptArg) -> bytes:
    """One argument as a RESP bulk string; numbers as redis-py writes them (their repr)."""
    data = (item if isinstance(item, str) else repr(item)).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class ScriptConnection:
    """Runs registered scripts on a connection of its own (see the module's docstring).
    Calls must not overlap: its owner makes one script call at a time."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        pool = conn.redis.connection_pool
        self._connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
        # Its timeout per read and per write becomes one deadline per call: redis-py would
        # wrap each write in asyncio.wait_for, a Task per call on Python 3.11.
        self._timeout: float | None = self._connection.socket_timeout
        self._connection.socket_timeout = None
        self._packed: dict[str, bytes] = {}  # see _pack
        self._runners: dict[str, ScriptCall] = {}

    @classmethod
    def for_conn(cls, conn: Conn) -> ScriptConnection | None:
        """One for a standalone Redis; None on Sentinel and Cluster (use conn.scripts)."""
        return cls(conn) if conn.topology == "standalone" else None

    def runner(self, name: str) -> ScriptCall:
        """Script `name` as a callable of (keys, args), like conn.scripts[name]."""
        runner = self._runners.get(name)
        if runner is None:

            async def runner(keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
                return await self.call(name, keys, args)

            self._runners[name] = runner
        return runner

    async def call(self, name: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        try:
            return await self._run(name, keys, args)
        except ResponseError as exc:
            if not is_missing_script(exc):
                raise
            # Redis restarted, failed over to a node without the scripts, or they were
            # flushed; the script did not run. Load them and run it again.
            await self._conn.load_scripts()
            return await self._run(name, keys, args)

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        script, conn = self._conn.scripts[name], self._conn
        packed = self._pack(*script.command(keys, args))
        if script.replicated and conn.wait_replicas:
            # WAIT on this same connection, written with the script (REDIS_WAIT_REPLICAS).
            packed += self._pack("WAIT", conn.wait_replicas, conn.wait_timeout_ms)
            reply, acknowledged = await self._connection.retry.call_with_retry(
                lambda: self._round_trip(packed, 2), self._failed
            )
            conn.check_replicas(int(acknowledged))
            return reply
        [reply] = await self._connection.retry.call_with_retry(
            lambda: self._round_trip(packed, 1), self._failed
        )
        return reply

    async def _round_trip(self, packed: bytes, replies: int) -> list[Any]:
        read: list[Any] = []
        error: ResponseError | None = None
        try:
            async with asyncio.timeout(self._timeout):
                await self._connection.send_packed_command(packed)
                for _ in range(replies):
                    # Every reply is read, also after an error one, so none is left behind
                    # for the next call to take as its own.
                    try:
                        read.append(await self._connection.read_response())
                    except ResponseError as exc:
                        error = error or exc
        except TimeoutError:
            raise RedisTimeoutError("Timeout waiting for a script reply from Redis") from None
        if error is not None:
            raise error
        return read

    def _pack(self, *items: ScriptArg) -> bytes:
        """One command in the Redis protocol (RESP), as redis-py's `pack_command` writes it,
        at a third of its cost: no encoder dispatch per argument, and the short strings that
        come back on every call (command, SHA, key names, prefixes) are encoded once."""
        out = [b"*%d\r\n" % len(items)]
        for item in items:
            # Only strings are remembered: 1, 1.0 and True would share one dict entry.
            part = self._packed.get(item) if isinstance(item, str) else None
            if part is None:
                part = _bulk(item)
                if isinstance(item, str) and len(item) <= 64 and len(self._packed) < 256:
                    self._packed[item] = part
            out.append(part)
        return b"".join(out)

    async def _failed(self, error: Exception) -> None:
        await self._connection.disconnect()

    async def aclose(self) -> None:
        await self._connection.disconnect()
