"""A Redis that is full under `noeviction` refuses writes: that is Redis unavailable (503, a
report retried), not a bad request and not a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import transitions
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.settings import Settings
from tests.support.seed import counts, create, ensure_test_types


@pytest.fixture
async def full_redis(conn: Conn) -> AsyncIterator[Conn]:
    """The test server with a memory limit below what it already uses."""
    before = await conn.redis.config_get("maxmemory*")
    await conn.redis.config_set("maxmemory-policy", "noeviction")
    await conn.redis.config_set("maxmemory", 1)
    try:
        yield conn
    finally:
        await conn.redis.config_set("maxmemory", before["maxmemory"])
        await conn.redis.config_set("maxmemory-policy", before["maxmemory-policy"])


async def test_a_create_on_a_full_redis_is_unavailable_and_writes_nothing(
    full_redis: Conn, settings: Settings
) -> None:
    ensure_test_types()
    with pytest.raises(RedisUnavailable, match="Redis is full"):
        await transitions.enqueue(full_redis, [create()], settings)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        for headers in ({}, {"Idempotency-Key": "full"}):  # the fast path and the route
            response = client.post(
                "/api/tasks", json={"type": "noop", "payload": 1}, headers=headers
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]
    assert await counts(full_redis) == {}
