"""REDIS_URL, read once: one Redis server, a primary named by Sentinel, or a Redis Cluster
(SPEC section 8). `client()` builds the redis-py client of each kind with the same options,
so every service, the producer and the dashboard connect the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis._parsers.commands import AsyncCommandsParser
from redis.asyncio.cluster import ClusterNode, PipelineStrategy, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException

Topology = Literal["standalone", "sentinel", "cluster"]
SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORTS = {"standalone": 6379, "sentinel": 26379, "cluster": 6379}
# Query options of a Sentinel or Cluster URL (a standalone URL is redis-py's own, which reads
# its query itself). The sentinels' credentials default to the data nodes'; an empty
# `sentinel_password=` means the sentinels take none (they often have no requirepass while
# the data nodes do). The ssl_* options set TLS up for rediss+ URLs, as redis-py reads them
# on a rediss:// URL.
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
CERT_REQS = ("none", "optional", "required")


class _Cluster(RedisCluster):
    """redis-py's cluster client, made to keep serving the healthy shards while one is down.

    Three changes to redis-py 8.1 (private parts, so checked by the cluster tests:
    tests/integration/topologies/test_cluster.py and tests/e2e/test_cluster_failover.py):
    - FCALL is routed by the keys it declares, as redis-py routes EVALSHA. Left to itself it
      asks a server for an FCALL's keys (COMMAND GETKEYS) on every call: a round trip per
      transition, always to one node, and while that node is down every transition fails.
    - The COMMAND table is read once (`_CommandTable`); redis-py re-read it on every topology
      refresh from the first primary it knew, and once that one was dead every refresh
      failed and closed every connection of the client.
    - A pipeline that meets a node it cannot reach raises at once (`_Pipeline`): redis-py
      closed every connection of the client, other tasks' calls in flight included, and
      sent the whole pipeline again, calls that had already run on healthy nodes included.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands_parser = _CommandTable()

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        if not transaction:
            pipe._execution_strategy = _Pipeline(pipe)
        return pipe

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() in ("FCALL", "FCALL_RO") and len(args) >= 2 and int(args[1]) > 0:
            slots = {self.keyslot(key) for key in args[2 : 2 + int(args[1])]}
            if len(slots) != 1:
                raise RedisClusterException(f"{command} - all keys must map to the same slot")
            return slots.pop()
        return await super()._determine_slot(command, *args)


class _CommandTable(AsyncCommandsParser):
    """The COMMAND table, read once: it is the same on every node of one release."""

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if node is not None:
            self.node = node
        if not self.commands:
            await super().initialize()


class _Pipeline(PipelineStrategy):
    """A non-transactional cluster pipeline that raises, once, when a node cannot be reached
    (the caller decides what to send again: report_outcomes resends only the calls that did
    not run); the client re-reads the topology on its next call."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        if not self._command_queue:
            return []
        client = self._pipe.cluster_client
        try:
            if client._initialize:
                await client.initialize()
            try:
                return await self._execute(
                    client,
                    self._command_queue,
                    raise_on_error=raise_on_error,
                    allow_redirections=allow_redirections,
                )
            except RedisCluster.ERRORS_ALLOW_RETRY:
                client._initialize = True
                raise
        finally:
            await self.reset()  # type: ignore[no-untyped-call]


class BadRedisUrl(ValueError):
    """REDIS_URL does not say which Redis to use; the message says what is wrong."""


@dataclass(frozen=True)
class RedisTarget:
    """What REDIS_URL names."""

    topology: Topology
    url: str  # as given (a bare host:port completed to redis://host:port)
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster seed nodes
    service: str = ""  # Sentinel's name of the primary
    db: int = 0
    username: str | None = None
    password: str | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def described(self) -> str:
        """The target without credentials, for logs and health output."""
        if self.topology == "standalone":
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}{parts.path}"
        hosts = ",".join(f"{host}:{port}" for host, port in self.hosts)
        if self.topology == "sentinel":
            return f"sentinel {hosts} / {self.service} / db {self.db}"
        return f"cluster {hosts}"


def parse(url: str) -> RedisTarget:
    """Read REDIS_URL; BadRedisUrl names what is wrong."""
    text = url.strip()
    if "://" not in text:
        text = f"redis://{text}"  # bare host:port (SPEC section 8)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        raise BadRedisUrl(f"REDIS_URL scheme {scheme!r} is not one of {known}")
    topology, tls = SCHEMES[scheme]
    if topology == "standalone":
        return RedisTarget("standalone", text, tls=tls)
    # urlsplit reads one host:port; several are split here.
    rest, _, query_text = text.split("://", 1)[1].partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username, password = _credentials(userinfo)
    hosts = tuple(_host_port(part, DEFAULT_PORTS[topology]) for part in hostlist.split(","))
    query = {
        name: values[-1] for name, values in parse_qs(query_text, keep_blank_values=True).items()
    }
    _check_options(topology, tls, query)
    segments = [unquote(part) for part in path.split("/") if part]
    if topology == "sentinel":
        if not segments:
            raise BadRedisUrl(
                "REDIS_URL for Sentinel names the primary's service: "
                "redis+sentinel://host1:26379,host2:26379/<service-name>/<db>"
            )
        db = _db(segments[1] if len(segments) > 1 else "0")
        return RedisTarget("sentinel", text, tls, hosts, segments[0], db, username, password, query)
    if segments and segments[0] not in ("", "0"):
        raise BadRedisUrl("Redis Cluster has only database 0: drop the path from REDIS_URL")
    return RedisTarget("cluster", text, tls, hosts, "", 0, username, password, query)


def _check_options(topology: Topology, tls: bool, query: dict[str, str]) -> None:
    known = (SENTINEL_OPTIONS if topology == "sentinel" else ()) + (TLS_OPTIONS if tls else ())
    for name, value in query.items():
        if name not in known:
            allowed = ", ".join(known) or "none"
            raise BadRedisUrl(
                f"REDIS_URL option {name!r} is not known for this scheme (known: {allowed})"
            )
        if name == "ssl_cert_reqs" and value not in CERT_REQS:
            raise BadRedisUrl(f"REDIS_URL ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
        if name == "ssl_check_hostname" and value not in ("true", "false"):
            raise BadRedisUrl("REDIS_URL ssl_check_hostname must be true or false")


def _tls_options(target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    options: dict[str, Any] = {"ssl": True}
    for name in TLS_OPTIONS:
        if name in target.query:
            value = target.query[name]
            options[name] = value == "true" if name == "ssl_check_hostname" else value
    return options


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, secret = userinfo.partition(":")
    if not colon:  # redis://secret@host: a password alone, as redis-py reads it
        return None, unquote(user)
    return (unquote(user) or None), unquote(secret)


def _host_port(part: str, default_port: int) -> tuple[str, int]:
    part = part.strip()
    if not part:
        raise BadRedisUrl("REDIS_URL has an empty host in its host list")
    if part.startswith("["):  # [::1]:7000
        host, _, port = part[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = part.rpartition(":") if part.count(":") == 1 else (part, "", "")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise BadRedisUrl(f"REDIS_URL host {part!r} has no valid port") from None


def _db(text: str) -> int:
    if not text.isdigit():
        raise BadRedisUrl(f"REDIS_URL database {text!r} is not a number")
    return int(text)


def client(target: RedisTarget, options: dict[str, Any]) -> aioredis.Redis | RedisCluster:
    """The client for `target` with redis-py connection `options` (decode_responses,
    timeouts, retry, ...). A Sentinel client asks the sentinels for the primary whenever it
    connects, so it follows failovers; a cluster client follows MOVED and re-reads the slots."""
    if target.topology == "standalone":
        return aioredis.Redis.from_url(target.url, **options)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    tls = _tls_options(target)
    if target.topology == "sentinel":
        node_options = {**options, **auth, **tls}
        node_options.pop("max_connections", None)
        # Sentinels commonly share the data nodes' password (without one they get none);
        # sentinel_username / sentinel_password in the URL say otherwise.
        sentinel_auth = {
            "username": target.query.get("sentinel_username", target.username) or None,
            "password": target.query.get("sentinel_password", target.password) or None,
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed in redis 8.2
            list(target.hosts),
            sentinel_kwargs={
                **sentinel_auth,
                **tls,
                "socket_connect_timeout": options.get("socket_connect_timeout"),
                "socket_timeout": options.get("socket_timeout") or 3,
            },
            **node_options,
        )
        primary: aioredis.Redis = sentinel.master_for(
            target.service,
            db=target.db,
            max_connections=options.get("max_connections", 256),
        )
        return primary
    cluster_options = {
        key: value
        for key, value in options.items()
        if key not in ("single_connection_client", "retry_on_timeout")
    }
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        # A shard that is down stops its own queues only; the others keep working.
        require_full_coverage=False,
        **auth,
        **tls,
        **cluster_options,
    )
