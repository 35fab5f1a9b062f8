"""Redis connections and the transition scripts, loaded once per client at service start."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, TypeVar, cast

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import codec, liveness, redis_url
from shared.errors import (
    RedisUnavailable,
    ReplicationTimeout,
    StoppedWhileWaiting,
    UnsupportedRedis,
)
from shared.keys import Keys
from shared.redis_url import Topology
from shared.settings import Settings

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "complete",
    "complete_claim",
    "fail",
    "requeue",
    "promote_due",
    "cancel",
    "progress",
    "retry_failed",
    "purge_expired",
    "cascade",
    "purge",
    "claim_deliveries",
    "record_delivery",
    "configure_queue",
    "schedule_put",
    "schedule_due",
    "schedule_advance",
    "schedule_control",
)

T = TypeVar("T")
logger = logging.getLogger(__name__)
MIN_REDIS_VERSION = (6, 2)
# A service starting before Redis answers tries again after these delays, doubling.
START_RETRY_FIRST_SECONDS = 0.5
START_RETRY_MAX_SECONDS = 5.0
CLOCK_SYNC_SECONDS = 10.0  # how long a reading of the server's clock offset is trusted
SCRIPTS = resources.files("shared") / "scripts"
# Prepended to each script in a Functions library: a library keeps its state between calls,
# and what _lib.lua reads once per call (the server's clock, the claim token's suffix) must
# be read afresh in each.
_FUNCTION_ENTRY = """
local function entry(body)
  return function(KEYS, ARGV)
    script_clock, token_suffix = nil, nil
    return body(KEYS, ARGV)
  end
end
"""


EventsMode = Literal["classic", "sharded", "both"]
_EVENTS_MODE_LINE = "local EVENTS_MODE = 'classic'"


@functools.cache
def _lib_source(events_mode: EventsMode) -> str:
    """_lib.lua with EVENTS_MODE set: where the scripts publish task events is fixed as they
    load, so it costs no argument and no branch on the caller's side."""
    lib = (SCRIPTS / "_lib.lua").read_text()
    if _EVENTS_MODE_LINE not in lib:
        raise RuntimeError(f"_lib.lua must define EVENTS_MODE as: {_EVENTS_MODE_LINE}")
    return lib.replace(_EVENTS_MODE_LINE, f"local EVENTS_MODE = '{events_mode}'", 1)


def _script_source(name: str, events_mode: EventsMode = "classic") -> str:
    return _lib_source(events_mode) + "\n" + (SCRIPTS / f"{name}.lua").read_text()


@functools.cache
def function_library(events_mode: EventsMode = "classic") -> tuple[str, str]:
    """(prefix, code) of the Redis Functions library holding every script. Its name carries
    a digest of the code, so services of two releases (or two EVENTS_MODEs) sharing one Redis
    during an upgrade each call their own functions (`<prefix>_<script>`)."""
    lib = _lib_source(events_mode)
    bodies = {name: (SCRIPTS / f"{name}.lua").read_text() for name in SCRIPT_NAMES}
    digest = hashlib.sha1((lib + "".join(bodies.values())).encode()).hexdigest()[:12]
    prefix = f"tq_{digest}"
    parts = [f"#!lua name={prefix}", lib, _FUNCTION_ENTRY]
    for name, body in bodies.items():
        parts.append(
            f"redis.register_function('{prefix}_{name}', entry(function(KEYS, ARGV)\n{body}\nend))"
        )
    return prefix, "\n".join(parts)


def is_missing_script(error: object) -> bool:
    """Redis no longer has the script or function: it restarted without persistence, a
    failover reached a node that never had it, or someone flushed it. Nothing ran."""
    return isinstance(error, NoScriptError) or (
        isinstance(error, ResponseError) and "Function not found" in str(error)
    )


class ScriptRunner:
    """One transition script on one client: FCALL of its function in the library on Redis
    7 and later (FUNCTION LOAD is replicated and kept in the RDB, so a failover does not lose
    it; FCALL pipelines on Redis Cluster), EVALSHA on Redis 6.2. A script or function the
    server lost is loaded again and the call retried once, transparently."""

    def __init__(self, conn: Conn, name: str) -> None:
        self.conn, self.name = conn, name
        # A create is acknowledged only once REDIS_WAIT_REPLICAS replicas hold it.
        self.replicated = name == "enqueue"
        self.source = _script_source(name, conn.events_mode)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self.function = f"{function_library(conn.events_mode)[0]}_{name}"

    def command(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The command that runs this script, for a pipeline or a raw connection."""
        if self.conn.use_functions:
            return ("FCALL", self.function, len(keys), *keys, *args)
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._call(keys, args)
        except ResponseError as exc:
            if not is_missing_script(exc):
                raise
            await self.conn.load_scripts()
            return await self._call(keys, args)

    async def _call(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # A cluster client routes FCALL and EVALSHA by their first key: the queue's slot.
        if not (self.replicated and self.conn.wait_replicas):
            return await self.conn.redis.execute_command(*self.command(keys, args))
        # WAIT counts the replicas that acknowledged this connection's writes, so it goes on
        # the connection that ran the script: one pipeline (on a cluster, both to the node
        # that owns the queue's slot).
        wait = ("WAIT", self.conn.wait_replicas, self.conn.wait_timeout_ms)
        if self.conn.topology == "cluster":
            reply, acknowledged = await self._call_and_wait_on_owner(keys, args, wait)
        else:
            async with self.conn.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(*self.command(keys, args))
                pipe.execute_command(*wait)
                reply, acknowledged = await pipe.execute()
        self.conn.check_replicas(int(acknowledged))
        return reply

    async def _call_and_wait_on_owner(
        self, keys: Sequence[str], args: Sequence[Any], wait: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        """The script and WAIT on one connection to the node that owns the queue's slot, with
        no retry. A cluster pipeline would not do: when the node dies while WAIT blocks,
        redis-py resends WAIT alone to its default node on a fresh connection, whose replicas
        then vouch for a write they never saw (a create acknowledged, then lost, in
        `make chaos CHAOS_REDIS=cluster CHAOS_WAIT_REPLICAS=1`). Any failure here is Redis
        unavailable (a 503: the client retries with its Idempotency-Key)."""
        redis = self.conn.redis
        node = redis.get_node_from_key(keys[0])
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(
                connection.pack_commands([self.command(keys, args), wait])
            )
            reply = await connection.read_response()
            acknowledged = await connection.read_response()
        except BaseException as exc:
            await connection.disconnect()  # a reply may be left unread: never reuse it
            if isinstance(exc, ResponseError) and not is_missing_script(exc):
                # MOVED after a failover, WAIT refused by a demoted primary: let the client
                # learn the new owner (it follows MOVED and refreshes its slots), then 503.
                with contextlib.suppress(Exception):
                    await redis.exists(keys[0])
                if not is_unavailable(exc) and not str(exc).startswith("WAIT"):
                    raise
                raise RedisUnavailable(f"the queue's primary moved: {exc}") from exc
            raise
        finally:
            node.release(connection)
        return reply, acknowledged


@dataclass
class Conn:
    """A Redis client (one server, Sentinel's primary, or a Cluster) with the key schema and
    every transition script."""

    redis: Any  # redis.asyncio.Redis, or RedisCluster (same commands, routed by key)
    keys: Keys
    topology: Topology = "standalone"
    scripts: dict[str, ScriptRunner] = field(default_factory=dict)
    # FCALL of the Functions library (Redis 7+) or EVALSHA (6.2): set by load_scripts.
    use_functions: bool = False
    wait_replicas: int = 0  # REDIS_WAIT_REPLICAS
    wait_timeout_ms: int = 500  # REDIS_WAIT_TIMEOUT_MS
    events_mode: EventsMode = "classic"  # EVENTS_MODE: where scripts publish task events
    _queues: dict[str, Keys] = field(default_factory=dict, repr=False)
    _registered: dict[str, float] = field(default_factory=dict, repr=False)  # queues.register
    _known_queues: list[str] | None = field(default=None, repr=False)  # queues.known, last read
    # The server's clock minus this host's, in ms, and when (monotonic) it was read.
    _clock_offset_ms: float = field(default=0.0, repr=False)
    _clock_read_at: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        self.scripts = {name: ScriptRunner(self, name) for name in SCRIPT_NAMES}

    def check_replicas(self, acknowledged: int) -> None:
        """ReplicationTimeout (a 503) when fewer replicas than REDIS_WAIT_REPLICAS hold a
        create: acknowledging it would promise what a failover now could take back."""
        if acknowledged < self.wait_replicas:
            raise ReplicationTimeout(acknowledged, self.wait_replicas, self.wait_timeout_ms)

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
            seconds, micros = await guarded(self._time())
            after = codec.now_ms()
            self._clock_offset_ms = seconds * 1000 + micros / 1000 - (before + after) / 2
            self._clock_read_at = time.monotonic()
        return int(codec.now_ms() + self._clock_offset_ms)

    async def _time(self) -> tuple[int, int]:
        if self.topology == "cluster":
            # TIME has no key: ask the primary of the global keys' slot (liveness is judged
            # there); cluster nodes' clocks agree as well as any hosts' do.
            node = self.redis.get_node_from_key(self.keys.heartbeats("worker"))
            return cast("tuple[int, int]", await self.redis.time(target_nodes=node))
        return cast("tuple[int, int]", await self.redis.time())

    async def load_scripts(self) -> None:
        """Load every script, so a broken one fails at boot, not at first use: the Functions
        library on Redis 7 and later (every primary of a cluster), else SCRIPT LOAD."""
        if self.topology == "cluster":
            await self._load_on_primaries()
            return
        info = await guarded(self.redis.info("server"))
        version = str(info["redis_version"])
        major, minor = (int(part) for part in version.split(".")[:2])
        if (major, minor) < MIN_REDIS_VERSION:
            # The scripts pop several ids at once (LPOP with a count, Redis 6.2): on an older
            # server every claim would fail. A distribution's redis-server on PATH may be one.
            raise UnsupportedRedis(
                f"Redis {version} is too old: this project needs Redis 6.2 or later"
            )
        if major < 7 and self.events_mode != "classic":
            raise UnsupportedRedis(
                f"EVENTS_MODE={self.events_mode} needs Redis 7 or later (sharded pub/sub)"
            )
        if major >= 7:
            await self._load_library()
            self.use_functions = True
            return
        for script in self.scripts.values():
            await guarded(self.redis.script_load(script.source))
        self.use_functions = False

    async def _load_library(self, **route: Any) -> None:
        _, code = function_library(self.events_mode)
        try:
            await guarded(self.redis.execute_command("FUNCTION LOAD", code, **route))
        except ResponseError as exc:
            if "already exists" not in str(exc):  # the name carries the code's digest
                raise

    async def _load_on_primaries(self) -> None:
        """The Functions library on each cluster primary that answers. A shard that is down
        does not stop a service from starting and serving the other queues: it gets the
        library when it is back, as after any failover (a missing function is reloaded and
        the call retried). RedisUnavailable only when no primary answers."""
        await guarded(self.redis.initialize())  # the topology; idempotent once read
        answered: list[int] = []
        unreachable: list[RedisUnavailable] = []
        for node in self.redis.get_primaries():
            try:
                info = await guarded(self.redis.info("server", target_nodes=node))
                answered.append(int(str(info["redis_version"]).split(".")[0]))
                if answered[-1] >= 7:
                    await self._load_library(target_nodes=node)
            except RedisUnavailable as exc:
                unreachable.append(exc)
        if not answered:
            raise unreachable[0] if unreachable else RedisUnavailable("no cluster primary")
        if min(answered) < 7:
            raise RedisUnavailable("Redis Cluster needs Redis 7 or later (Redis Functions)")
        self.use_functions = True

    async def aclose(self) -> None:
        await self.redis.aclose()


def create_redis(settings: Settings, **overrides: Any) -> Conn:
    """Build the client every service uses, from REDIS_URL (one server, Sentinel or
    Cluster): decoded strings, health checks, bounded timeouts."""
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
    target = redis_url.parse(settings.redis_url)
    return Conn(
        redis=redis_url.client(target, options),
        keys=Keys(settings.queue_name),
        topology=target.topology,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
        events_mode=settings.events_mode,
    )


@asynccontextmanager
async def connect(
    settings: Settings, *, stop: asyncio.Event | None = None, service: str | None = None
) -> AsyncIterator[Conn]:
    """A Conn with its scripts loaded, closed on exit.

    With `stop` (a service starting), a Redis that does not answer yet is waited for: the
    service starts once it does, instead of exiting into a restart loop (a pod scheduled
    during an outage, compose starting everything at once). Its liveness file is renewed
    meanwhile, since the process is healthy; StoppedWhileWaiting when `stop` is set first.
    A server that cannot run the project (UnsupportedRedis) fails at once."""
    conn = create_redis(settings)
    try:
        if stop is None:
            await conn.load_scripts()
        else:
            await _load_when_reachable(conn, stop, service or "service")
        yield conn
    finally:
        await conn.aclose()


async def _load_when_reachable(conn: Conn, stop: asyncio.Event, service: str) -> None:
    delay = START_RETRY_FIRST_SECONDS
    while True:
        liveness.touch(service)
        try:
            await conn.load_scripts()
            return
        except UnsupportedRedis:
            raise
        except RedisUnavailable as exc:
            logger.warning("%s: waiting for Redis (%s); trying again in %.1fs", service, exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            raise StoppedWhileWaiting(f"{service} stopped before Redis answered")
        delay = min(delay * 2, START_RETRY_MAX_SECONDS)


# Replies that mean the server (or the cluster) cannot serve now, not that the request is
# wrong: loading its data, a failed save, a failover under way (a blocked client UNBLOCKED,
# a demoted primary READONLY, a slot moving or uncovered, no primary for it), too few
# replicas for min-replicas-to-write, or full under noeviction.
_UNAVAILABLE_REPLIES = (
    "LOADING",
    "MISCONF",
    "UNBLOCKED",
    "READONLY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MASTERDOWN",
    "NOREPLICAS",
    "MOVED",
    "ASK",
)


def is_unavailable(error: object) -> bool:
    """Whether a reply (an exception a pipeline returned in place of a result) means Redis,
    or one node of a cluster, could not serve the call: as `guarded` would judge it."""
    if not isinstance(error, Exception):
        return False
    if isinstance(
        error,
        RedisConnectionError
        | RedisTimeoutError
        | ConnectionError
        | OSError
        | ClusterError
        | TryAgainError
        | AskError
        | ReadOnlyError
        | RedisClusterException,
    ):
        return True
    if _connection_torn(error):
        return True
    text = str(error)
    return "> 'maxmemory'" in text or text.split(" ", 1)[0].upper() in _UNAVAILABLE_REPLIES


def _connection_torn(exc: BaseException) -> bool:
    """redis-py 8.1's cluster client, when a node drops, disconnects connections that other
    tasks are still writing on: the write fails inside redis-py's connection code with
    "'NoneType' object has no attribute 'writelines'" (asyncio's loop) or "unable to perform
    operation on <TCPTransport closed=True>; the handler is closed" (uvloop). A connection lost
    to the failure, not a bug of the caller's nor the task's."""
    if not isinstance(exc, AttributeError | RuntimeError):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if _REDIS_CONNECTION_CODE in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False


_REDIS_CONNECTION_CODE = f"{os.sep}redis{os.sep}asyncio{os.sep}connection.py"


async def guarded(call: Awaitable[T]) -> T:
    """Await a Redis call, turning connection trouble, failovers and a full Redis into
    RedisUnavailable (a 503 with Retry-After; a worker backs off, re-reads the topology and
    goes on): no service needs a restart after a failover."""
    try:
        return await call
    except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
        raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
    except (ClusterError, TryAgainError, AskError, ReadOnlyError) as exc:
        raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
    except RedisClusterException as exc:  # no node for a slot: a shard is down
        raise RedisUnavailable(str(exc) or type(exc).__name__) from exc
    except (AttributeError, RuntimeError) as exc:
        if not _connection_torn(exc):
            raise
        raise RedisUnavailable(f"connection lost: {exc}") from exc
    except RedisError as exc:
        text = str(exc)
        if "> 'maxmemory'" in text:
            raise RedisUnavailable(f"Redis is full: {text}") from exc
        if text.split(" ", 1)[0].upper() in _UNAVAILABLE_REPLIES:
            raise RedisUnavailable(text) from exc
        raise
