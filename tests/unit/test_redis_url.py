"""REDIS_URL forms (SPEC section 8): one server, Sentinel's primary, Redis Cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from shared.errors import RedisUnavailable
from shared.redis import guarded, is_unavailable
from shared.redis_url import BadRedisUrl, client, parse


def test_one_server_urls_pass_through() -> None:
    for url in ("redis://localhost:6379/0", "rediss://u:p@cache:6380/2", "unix:///run/r.sock"):
        target = parse(url)
        assert target.topology == "standalone" and target.url == url
    bare = parse("10.0.0.5:6380")
    assert bare.topology == "standalone" and bare.url == "redis://10.0.0.5:6380"


def test_sentinel_url_names_sentinels_service_and_db() -> None:
    target = parse("redis+sentinel://user:s%40cret@s1:26379,s2,[::1]:26380/mymaster/3")
    assert target.topology == "sentinel" and not target.tls
    assert target.hosts == (("s1", 26379), ("s2", 26379), ("::1", 26380))
    assert target.service == "mymaster" and target.db == 3
    assert (target.username, target.password) == ("user", "s@cret")
    assert "s@cret" not in target.described and "mymaster" in target.described
    assert parse("rediss+sentinel://s1/mymaster").tls
    assert parse("redis+sentinel://s1/mymaster").db == 0


def test_cluster_url_names_seed_nodes() -> None:
    target = parse("redis+cluster://:pw@n1:7000,n2:7001")
    assert target.topology == "cluster"
    assert target.hosts == (("n1", 7000), ("n2", 7001))
    assert target.password == "pw" and target.username is None
    assert parse("rediss+cluster://n1:7000").tls


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://localhost:6379", "scheme"),
        ("redis+sentinel://s1:26379", "service"),
        ("redis+sentinel://s1:26379/mymaster/x", "database"),
        ("redis+cluster://n1:7000/2", "database 0"),
        ("redis+cluster://n1:seven", "port"),
        ("redis+cluster://n1:7000,,n2:7001", "empty host"),
        ("redis+sentinel://s1/m?sentinel_pasword=x", "'sentinel_pasword' is not known"),
        ("redis+cluster://n1?sentinel_password=x", "not known for this scheme"),
        ("redis+sentinel://s1/m?ssl_ca_certs=/ca.pem", "known: sentinel_username"),
        ("rediss+cluster://n1?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("rediss+cluster://n1?ssl_check_hostname=yes", "true or false"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(BadRedisUrl, match=says):
        parse(url)


def test_sentinels_take_the_data_nodes_credentials_unless_the_url_says_otherwise() -> None:
    shared = client(parse("redis+sentinel://u:pw@127.0.0.1:26379/m"), {})
    assert shared.connection_pool.sentinel_manager.sentinel_kwargs["password"] == "pw"
    assert shared.connection_pool.connection_kwargs["password"] == "pw"
    # Sentinels without requirepass, data nodes with it: an empty sentinel_password.
    open_sentinels = client(parse("redis+sentinel://:pw@127.0.0.1:26379/m?sentinel_password="), {})
    manager = open_sentinels.connection_pool.sentinel_manager
    assert manager.sentinel_kwargs["password"] is None
    assert open_sentinels.connection_pool.connection_kwargs["password"] == "pw"
    own = client(
        parse("redis+sentinel://:pw@127.0.0.1/m?sentinel_username=s&sentinel_password=spw"), {}
    )
    kwargs = own.connection_pool.sentinel_manager.sentinel_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("s", "spw")


def test_tls_options_of_a_rediss_url_reach_every_connection(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    query = f"ssl_ca_certs={ca}&ssl_cert_reqs=required&ssl_check_hostname=false"
    sentinel = client(parse(f"rediss+sentinel://127.0.0.1/m?{query}"), {})
    assert "SSL" in sentinel.connection_pool.connection_class.__name__
    assert sentinel.connection_pool.sentinel_manager.sentinel_kwargs["ssl"] is True
    for kwargs in (
        sentinel.connection_pool.connection_kwargs,
        sentinel.connection_pool.sentinel_manager.sentinel_kwargs,
    ):
        assert kwargs["ssl_ca_certs"] == str(ca)
        assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is False
    cluster = client(parse(f"rediss+cluster://127.0.0.1:7000?{query}"), {})
    assert isinstance(cluster, RedisCluster)
    node_kwargs = cluster.nodes_manager.connection_kwargs
    assert node_kwargs["ssl_ca_certs"] == str(ca) and node_kwargs["ssl_cert_reqs"] == "required"


def test_cluster_client_is_redis_py_cluster_seeded_from_every_node() -> None:
    built = client(parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"), {})
    assert isinstance(built, RedisCluster)
    seeds = {(node.host, node.port) for node in built.nodes_manager.startup_nodes.values()}
    assert seeds == {("127.0.0.1", 7000), ("127.0.0.1", 7001)}


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Connection reset by peer"),
        ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
        ReadOnlyError("You can't write against a read only replica."),
        ClusterDownError("The cluster is down"),
        TryAgainError("Multiple keys request during rehashing of slot"),
        MovedError("3999 127.0.0.1:6381"),
        SlotNotCoveredError("Command # 1 (GET x) of pipeline caused error: slot not covered"),
        ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError("LOADING Redis is loading the dataset in memory"),
        ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
    ],
)
async def test_failover_replies_count_as_redis_unavailable(error: Exception) -> None:
    async def fails() -> None:
        raise error

    with pytest.raises(RedisUnavailable):
        await guarded(fails())


async def test_a_wrong_request_stays_an_error() -> None:
    async def fails() -> None:
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(ResponseError):
        await guarded(fails())


def _raise_in(filename: str, error: Exception) -> None:
    """Raise `error` from code that claims to live in `filename` (its traceback says so)."""
    namespace: dict[str, object] = {"error": error}
    exec(compile("def write():\n    raise error\n", filename, "exec"), namespace)
    namespace["write"]()  # type: ignore[operator]


TORN = {  # fresh instances each time: a raised instance keeps its earlier traceback
    "asyncio": lambda: AttributeError("'NoneType' object has no attribute 'writelines'"),
    "uvloop": lambda: RuntimeError(
        "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
    ),
}


@pytest.mark.parametrize("loop", TORN)
async def test_a_connection_torn_inside_redis_py_counts_as_unavailable(loop: str) -> None:
    """redis-py 8.1's cluster client closes connections other tasks still write on when a node
    drops: the write fails inside its connection code, and that is Redis unavailable (a worker
    that took it for the task's own error failed a task that had succeeded)."""
    inside = str(Path(redis.__file__).parent / "asyncio" / "connection.py")
    error = TORN[loop]

    async def fails() -> None:
        _raise_in(inside, error())

    with pytest.raises(RedisUnavailable, match="connection lost"):
        await guarded(fails())
    try:
        _raise_in(inside, error())
    except (AttributeError, RuntimeError) as caught:
        assert is_unavailable(caught)


@pytest.mark.parametrize("loop", TORN)
async def test_the_same_error_from_our_own_code_stays_a_bug(loop: str) -> None:
    error = TORN[loop]

    async def fails() -> None:
        _raise_in(__file__, error())

    with pytest.raises((AttributeError, RuntimeError)):
        await guarded(fails())
    try:
        _raise_in(__file__, error())
    except (AttributeError, RuntimeError) as caught:
        assert not is_unavailable(caught)
