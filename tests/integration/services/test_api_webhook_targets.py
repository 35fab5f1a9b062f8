"""Webhook URLs at creation through the API (SPEC section 5): IPv6 literals with an IPv4
address inside are judged by that address, on the fast path and the route alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.seed import ensure_test_types

PUBLIC = ["http://[::ffff:8.8.8.8]/x", "http://[::ffff:808:808]/x", "http://[64:ff9b::8.8.8.8]/x"]
PRIVATE = ["http://[::ffff:10.0.0.1]/x", "http://[64:ff9b::127.0.0.1]/x"]
NO_SCHEME = ["", "notaurl"]


@pytest.fixture
def strict_api(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    strict = make_settings(settings.redis_url, webhook_allow_private_networks=False)
    with TestClient(create_app(strict), base_url="http://127.0.0.1") as client:
        yield client


def _bodies(url: str) -> list[dict[str, Any]]:
    return [
        {"type": "image", "payload": 1, "webhook": url},  # completion webhook
        {"type": "webhook", "payload": url},  # webhook task
    ]


@pytest.mark.parametrize("url", PUBLIC)
def test_ipv6_literal_with_a_public_ipv4_inside_is_created(
    strict_api: TestClient, url: str
) -> None:
    for body in _bodies(url):
        for headers in ({}, {"Idempotency-Key": f"{url}-{body['type']}"}):
            response = strict_api.post("/api/tasks", json=body, headers=headers)
            assert response.status_code == 201, (body, headers, response.text)


@pytest.mark.parametrize("url", PRIVATE)
async def test_ipv6_literal_with_a_private_ipv4_inside_is_refused_as_private(
    strict_api: TestClient, conn: Conn, url: str
) -> None:
    for body in _bodies(url):
        for headers in ({}, {"Idempotency-Key": "k"}):
            response = strict_api.post("/api/tasks", json=body, headers=headers)
            assert response.status_code == 400, (body, headers, response.text)
            error = response.json()["error"]
            assert "private" in error and "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in error, error
            assert "ends in a number" not in error
    assert await conn.redis.hgetall(conn.keys.counts) == {}


@pytest.mark.parametrize("url", NO_SCHEME)
def test_webhook_without_a_scheme_says_so(strict_api: TestClient, url: str) -> None:
    response = strict_api.post("/api/tasks", json={"type": "image", "payload": 1, "webhook": url})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "'none'" not in error and "http" in error, error
