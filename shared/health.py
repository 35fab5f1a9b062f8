"""Health checks: liveness and readiness behind `python -m services.<name>.health` (compose,
k8s), the Redis check behind /readyz, and the Redis configuration check every service runs
at start and /api/health shows."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from typing import cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
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


@dataclass(frozen=True)
class EvictionPolicy:
    """One server's eviction settings; `node` names a cluster primary (host:port), else ''."""

    policy: str
    maxmemory: str
    node: str = ""


async def eviction_policy(conn: Conn) -> list[EvictionPolicy] | None:
    """The server's maxmemory-policy and maxmemory (on a cluster, every primary's that
    answers: each shard is configured on its own, and any one that evicts loses its queues'
    tasks), or None when unknown: managed Redis and restricted ACL users often refuse
    CONFIG GET, which is no fault of theirs.

    Raises RedisUnavailable when Redis (on a cluster, every primary) does not answer at all.
    """
    if conn.topology == "cluster":
        return await _cluster_policies(cast("RedisCluster", conn.redis))
    try:
        config = cast("dict[str, str]", await guarded(conn.redis.config_get("maxmemory*")))
    except ResponseError:  # NOPERM, or CONFIG renamed away
        return None
    found = _policy_of(config, "")
    return [found] if found else None


async def _cluster_policies(redis: RedisCluster) -> list[EvictionPolicy] | None:
    await guarded(redis.initialize())
    primaries = redis.get_primaries()

    async def ask(node: ClusterNode) -> dict[str, str]:
        # A hung primary must not hold the answer for the shards that serve.
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            return cast("dict[str, str]", await redis.config_get("maxmemory*", target_nodes=node))

    answers = await asyncio.gather(
        *(guarded(ask(node)) for node in primaries), return_exceptions=True
    )
    found: list[EvictionPolicy] = []
    for node, answer in zip(primaries, answers, strict=True):
        if isinstance(answer, RedisUnavailable | ResponseError | TimeoutError):
            continue  # a shard that is down is readiness's concern; a refusal is unknown
        if isinstance(answer, BaseException):
            raise answer
        policy = _policy_of(answer, f"{node.host}:{node.port}")
        if policy:
            found.append(policy)
    if (
        not found
        and answers
        and all(isinstance(a, RedisUnavailable | TimeoutError) for a in answers)
    ):
        raise RedisUnavailable(f"no Redis Cluster primary answered CONFIG GET: {answers[0]!r}")
    return found or None


def _policy_of(config: dict[str, str], node: str) -> EvictionPolicy | None:
    policy = config.get("maxmemory-policy")
    return EvictionPolicy(policy, config.get("maxmemory", "?"), node) if policy else None


async def redis_warnings(conn: Conn) -> list[str]:
    """What in the Redis configuration puts tasks at risk; empty when fine or unknown."""
    return _warnings(await eviction_policy(conn))


def _warnings(found: list[EvictionPolicy] | None) -> list[str]:
    # Task records carry no TTL, but volatile-* policies still evict idempotency keys.
    return [
        f"Redis{' node ' + each.node if each.node else ''} maxmemory-policy is {each.policy} "
        f"(maxmemory {each.maxmemory}): at its memory limit Redis deletes keys, silently "
        f"losing tasks and idempotency keys; set maxmemory-policy {SAFE_POLICY}"
        for each in found or []
        if each.policy != SAFE_POLICY
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
