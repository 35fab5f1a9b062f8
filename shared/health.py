"""Health checks: liveness and readiness behind `python -m services.<name>.health` (compose,
k8s), the Redis check behind /readyz, and the Redis configuration check every service runs
at start and /api/health shows."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from shared import codec, liveness
from shared.errors import RedisUnavailable
from shared.redis import Conn, create_redis, guarded
from shared.settings import get_settings

logger = logging.getLogger(__name__)
SAFE_POLICY = "noeviction"
READY_TIMEOUT_SECONDS = 1.0  # /readyz: how long Redis has to answer PING
READY_RETRY_AFTER_SECONDS = 5


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


def check(service: str, argv: list[str] | None = None) -> None:
    """Exit 0 when `service` is healthy, else 1 (a container health check).

    With `--live`: liveness, this process's own liveness file was touched recently (no Redis
    connection at all, so a Redis outage restarts nothing). Without it: readiness, an
    instance of `service` on this host beat in Redis recently (`--any-host`: on any host).
    """
    args = sys.argv[1:] if argv is None else argv
    if "--live" in args:
        sys.exit(check_live(service))
    import socket

    host = socket.gethostname() if "--any-host" not in args else None
    try:
        ok = asyncio.run(_alive(service, host))
    except Exception as exc:
        print(f"{service}: unhealthy: {exc}")
        sys.exit(1)
    print(f"{service}: {'healthy' if ok else 'no recent heartbeat'}")
    sys.exit(0 if ok else 1)


def check_live(service: str) -> int:
    """0 when `service`'s liveness file is fresh (see shared.liveness), else 1; prints why."""
    max_age = liveness.max_age_for(get_settings().heartbeat_seconds)
    if liveness.is_alive(service, max_age):
        print(f"{service}: alive")
        return 0
    print(f"{service}: not alive: {liveness.path_for(service)} missing or older than {max_age:g} s")
    return 1


async def redis_ready(conn: Conn, timeout: float = READY_TIMEOUT_SECONDS) -> str | None:
    """None when Redis answers PING within `timeout` seconds, else why it did not. On a
    cluster, ready when any primary answers: a shard that is down stops only its own queues,
    so it must not take every API pod out of its Service (a PING left to the client goes to
    one default node, which may be the shard that is down)."""
    try:
        async with asyncio.timeout(timeout):
            if conn.topology == "cluster":
                await _any_primary_answers(conn)
            else:
                await guarded(conn.redis.ping())
    except TimeoutError:
        return f"Redis did not answer within {timeout:g} s"
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


async def _any_primary_answers(conn: Conn) -> None:
    """PING every primary at once; return at the first answer, raise when none answers."""
    redis = cast("RedisCluster", conn.redis)
    await guarded(redis.initialize())
    pings = {asyncio.ensure_future(redis.ping(target_nodes=node)) for node in redis.get_primaries()}
    failures: list[BaseException] = []
    try:
        while pings:
            done, pings = await asyncio.wait(pings, return_when=asyncio.FIRST_COMPLETED)
            for ping in done:
                failure = ping.exception()
                if failure is None:
                    return
                failures.append(failure)
    finally:
        for ping in pings:
            ping.cancel()
    raise RedisUnavailable(f"no Redis Cluster primary answered: {failures[0] if failures else '-'}")


async def eviction_policy(conn: Conn) -> tuple[str, str] | None:
    """The server's (maxmemory-policy, maxmemory), or None when unknown: managed Redis and
    restricted ACL users often refuse CONFIG GET, which is no fault of theirs.

    Raises RedisUnavailable when Redis does not answer at all.
    """
    try:
        config = cast("dict[str, str]", await guarded(conn.redis.config_get("maxmemory*")))
    except ResponseError:  # NOPERM, or CONFIG renamed away
        return None
    policy = config.get("maxmemory-policy")
    return (policy, config.get("maxmemory", "?")) if policy else None


async def redis_warnings(conn: Conn) -> list[str]:
    """What in the Redis configuration puts tasks at risk; empty when fine or unknown."""
    return _warnings(await eviction_policy(conn))


def _warnings(found: tuple[str, str] | None) -> list[str]:
    if found is None or found[0] == SAFE_POLICY:
        return []
    policy, maxmemory = found
    # Task records carry no TTL, but volatile-* policies still evict idempotency keys.
    return [
        f"Redis maxmemory-policy is {policy} (maxmemory {maxmemory}): at its memory limit "
        f"Redis deletes keys, silently losing tasks and idempotency keys; set "
        f"maxmemory-policy {SAFE_POLICY}"
    ]


async def warn_about_redis(conn: Conn, service: str) -> None:
    """Log `redis_warnings` at service start. Never raises: the api and dashboard start
    before Redis may answer, and /api/health repeats the check every time."""
    try:
        found = await eviction_policy(conn)
    except Exception as exc:
        logger.info("%s: Redis configuration not checked (%s)", service, exc)
        return
    if found is None:
        logger.info(
            "%s: Redis refused CONFIG GET; make sure its maxmemory-policy is %s",
            service,
            SAFE_POLICY,
        )
    for warning in _warnings(found):
        logger.warning("%s: %s", service, warning)
