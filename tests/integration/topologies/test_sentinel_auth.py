"""A Sentinel deployment whose sentinels have a password of their own, not the data nodes':
`?sentinel_password=` in REDIS_URL reaches the primary, where the data nodes' password,
sent to the sentinels by default, is refused by them (real servers on loopback)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from shared import queries, transitions
from shared.errors import RedisUnavailable
from shared.redis import create_redis
from tests.conftest import make_settings
from tests.support.redis_cluster import default_binary, distinct_free_ports
from tests.support.seed import create, ensure_test_types

PASSWORD = "data-n0des-only"
SENTINEL_PASSWORD = "sentinels-0wn"
SERVICE = "guarded"


@dataclass
class Protected:
    sentinel_port: int
    primary_port: int

    def url(self, query: str = "") -> str:
        return f"redis+sentinel://:{PASSWORD}@127.0.0.1:{self.sentinel_port}/{SERVICE}/0{query}"


def answers(client: redis.Redis, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.02)


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    binary = default_binary()
    root = tmp_path_factory.mktemp("sentinel-auth")
    primary_port, sentinel_port = distinct_free_ports(2)
    config = root / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {sentinel_port}",
                f"dir {root}",
                f"logfile {root / 'sentinel.log'}",
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1",
                f"sentinel auth-pass {SERVICE} {PASSWORD}",
                f"requirepass {SENTINEL_PASSWORD}",
                "",
            ]
        )
    )
    primary_args = [
        binary, "--bind", "127.0.0.1", "--port", str(primary_port), "--save", "",
        "--appendonly", "no", "--dir", str(root), "--logfile", str(root / "primary.log"),
        "--requirepass", PASSWORD,
    ]  # fmt: skip
    processes = [subprocess.Popen(primary_args)]
    try:
        answers(redis.Redis(port=primary_port, password=PASSWORD))
        processes.append(subprocess.Popen([binary, str(config), "--sentinel"]))
        sentinel = redis.Redis(
            port=sentinel_port, password=SENTINEL_PASSWORD, decode_responses=True
        )
        answers(sentinel)
        deadline = time.monotonic() + 10
        while sentinel.execute_command("SENTINEL", "MASTER", SERVICE).get("flags") != "master":
            assert time.monotonic() < deadline, "the sentinel never reached the primary"
            time.sleep(0.05)
        yield Protected(sentinel_port, primary_port)
    finally:
        for process in processes:
            process.kill()
            process.wait()


async def test_the_sentinels_own_password_from_the_url_reaches_the_primary(
    protected: Protected,
) -> None:
    settings = make_settings(protected.url(f"?sentinel_password={SENTINEL_PASSWORD}"))
    conn = create_redis(settings)
    try:
        await conn.load_scripts()
        ensure_test_types()
        [task], _ = await transitions.enqueue(conn, [create()], settings)
        assert (await queries.get_task(conn, task.id)).status == "pending"
        primary = redis.Redis(port=protected.primary_port, password=PASSWORD)
        assert primary.exists(conn.keys.task(task.id)) == 1
    finally:
        await conn.aclose()


async def test_without_it_the_sentinels_refuse_the_data_nodes_password(
    protected: Protected,
) -> None:
    """Why the option exists: by default the sentinels get the data nodes' password (right
    where both share one), which these refuse, and no primary is found."""
    conn = create_redis(make_settings(protected.url()))
    try:
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(conn.load_scripts(), 30)
    finally:
        await conn.aclose()
