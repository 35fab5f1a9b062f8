"""SSRF guard (SPEC section 5): literal private targets refused at creation (400), resolved
private targets refused at delivery, and the connection made to the address that was checked."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.notifier.netguard import Resolver
from services.notifier.webhooks import HttpPoster
from shared import queries
from shared.models import TaskDetails, TaskStatus
from shared.netguard import IPAddress
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.notifier.helpers import StartNotifier, create, finish_task, wait_final
from tests.integration.notifier.servers import Receiver
from tests.support.waiting import wait_until

PRIVATE_TARGETS = [
    "http://127.0.0.1/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10:8080/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[fd00::1]/hook",
    "http://224.0.0.1/hook",
    "http://0.0.0.0/hook",
    "http://localhost/hook",
]


@pytest.fixture
def strict_api(settings: Settings) -> Iterator[TestClient]:
    strict = make_settings(settings.redis_url, webhook_allow_private_networks=False)
    with TestClient(create_app(strict), base_url="http://127.0.0.1") as client:
        yield client


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_ssrf_literal_private_targets_are_refused_at_creation(
    strict_api: TestClient, url: str
) -> None:
    as_callback = strict_api.post(
        "/api/tasks", json={"type": "image", "payload": {}, "webhook": url}
    )
    as_task = strict_api.post("/api/tasks", json={"type": "webhook", "payload": url})
    for response in (as_callback, as_task):
        assert response.status_code == 400, response.text
        assert "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in response.json()["error"]


# Spellings of private addresses that passed creation before (issue 11, item 10).
DISGUISED_TARGETS = [
    "http://2130706433/hook",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/hook",  # ... as one hex number
    "http://127.1/hook",  # ... short form
    "http://0177.0.0.1/hook",  # ... octal
    "http://0x0a.0x1:8080/hook",  # 10.0.0.1, hex parts
    "http://127.0.0.1./hook",  # trailing dot
    "http://localhost./hook",
    "http://tasks.localhost/hook",  # resolved to loopback by RFC 6761 resolvers
    "http://[fec0::1]/hook",  # site-local
    "http://[2002:7f00:1::1]/hook",  # 6to4 of 127.0.0.1
    "http://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",  # Teredo, client 127.0.0.1
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
]


@pytest.mark.parametrize("url", DISGUISED_TARGETS)
async def test_ssrf_disguised_private_targets_are_refused_at_creation(
    strict_api: TestClient, conn: Conn, url: str
) -> None:
    bodies = [
        {"type": "image", "payload": {}, "webhook": url},
        {"type": "webhook", "payload": url},
        {"type": "webhook", "payload": {"url": url, "body": {}}},
    ]
    for body in bodies:
        for headers in ({}, {"Idempotency-Key": "k"}):  # the fast path and the route
            response = strict_api.post("/api/tasks", json=body, headers=headers)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"] and isinstance(response.json()["details"], list)
    assert await conn.redis.hgetall(conn.keys.counts) == {}
    assert await conn.redis.zcard(conn.keys.index_all) == 0


@pytest.mark.parametrize("host", ["1.2.3.999", "10.0.0.1.2", "example.123", "1..1"])
async def test_hosts_ending_in_a_number_that_is_no_address_are_400(
    settings: Settings, conn: Conn, host: str
) -> None:
    # Browsers and httpx refuse these URLs, so they could only fail at send time, retried;
    # with private networks allowed too (the settings fixture allows them).
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as api:
        response = api.post("/api/tasks", json={"type": "webhook", "payload": f"http://{host}/"})
    assert response.status_code == 400, response.text
    assert "ends in a number" in response.json()["error"]
    assert await conn.redis.hgetall(conn.keys.counts) == {}


def test_ssrf_other_schemes_are_refused_at_creation(strict_api: TestClient) -> None:
    response = strict_api.post("/api/tasks", json={"type": "webhook", "payload": "file:///etc"})
    assert response.status_code == 400
    assert "http or https" in response.json()["error"]


def fake_dns(name: str, address: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host != name:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(address)]

    return resolve


async def test_ssrf_name_resolving_to_loopback_is_refused_at_delivery(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    strict = make_settings(settings.redis_url, webhook_allow_private_networks=False)
    async with Receiver().running() as receiver:
        url = f"http://hooks.example.test:{receiver.port}/hook"
        poster = HttpPoster(strict, resolver=fake_dns("hooks.example.test", "127.0.0.1"))
        try:
            await start_notifier(strict, poster=poster)
            callback = await finish_task(conn, strict, url)
            task = await create(conn, strict, type="webhook", payload=url, max_retries=0)
            details = await wait_until(
                lambda: _delivered(conn, callback.id), message="a delivery record"
            )
            failed = await wait_final(conn, task.id)
        finally:
            await poster.aclose()

        assert receiver.requests == []
    assert details is not None
    [record] = details.webhook_deliveries
    assert record.outcome == "refused" and record.status_code is None
    assert record.error is not None
    assert "hooks.example.test resolves to 127.0.0.1" in record.error
    assert failed.status == TaskStatus.FAILED
    assert failed.error is not None and "resolves to 127.0.0.1" in failed.error


async def test_ssrf_allowed_private_network_connects_to_the_checked_address(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    # The system resolver does not know this name: success proves the connection went to the
    # address the guard resolved and checked, with no second lookup.
    async with Receiver().running() as receiver:
        url = f"http://hooks.example.test:{receiver.port}/hook"
        poster = HttpPoster(settings, resolver=fake_dns("hooks.example.test", "127.0.0.1"))
        try:
            await start_notifier(settings, poster=poster)
            task = await create(conn, settings, type="webhook", payload=url)
            done = await wait_final(conn, task.id)
        finally:
            await poster.aclose()

    assert done.status == TaskStatus.COMPLETED
    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"


@pytest.mark.parametrize(
    "address",
    ["2002:7f00:1::1", "fec0::1", "64:ff9b::7f00:1", "2001:0:4136:e378:8000:63bf:80ff:fffe"],
)
async def test_ssrf_names_resolving_to_tunnelled_private_addresses_are_refused_at_delivery(
    settings: Settings, address: str
) -> None:
    strict = make_settings(settings.redis_url, webhook_allow_private_networks=False)
    poster = HttpPoster(strict, resolver=fake_dns("hooks.example.test", address))
    try:
        result = await poster.post("http://hooks.example.test/hook", b"{}", {})
    finally:
        await poster.aclose()
    assert result.refused and result.error is not None
    assert f"resolves to {ipaddress.ip_address(address)}" in result.error


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "127.0.0.1."])
async def test_ssrf_ipv4_spellings_are_refused_at_delivery(settings: Settings, host: str) -> None:
    strict = make_settings(settings.redis_url, webhook_allow_private_networks=False)
    poster = HttpPoster(strict)
    try:
        async with Receiver().running() as receiver:
            result = await poster.post(f"http://{host}:{receiver.port}/hook", b"{}", {})
            assert receiver.requests == []
    finally:
        await poster.aclose()
    assert result.refused and result.error is not None and "127.0.0.1" in result.error


def _loopback_name() -> str | None:
    """A name this machine's resolver maps to loopback only (localhost as the last resort)."""
    for name in (socket.gethostname(), "localhost.localdomain", "ip6-localhost", "localhost"):
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if infos and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos):
            return name
    return None


async def test_ssrf_system_resolver_loopback_name_is_refused(settings: Settings) -> None:
    name = _loopback_name()
    assert name is not None, "not even localhost resolves to loopback"
    strict = make_settings(settings.redis_url, webhook_allow_private_networks=False)
    poster = HttpPoster(strict)
    try:
        async with Receiver().running() as receiver:
            result = await poster.post(f"http://{name}:{receiver.port}/hook", b"{}", {})
            assert receiver.requests == []
    finally:
        await poster.aclose()
    assert result.refused and result.error is not None and "loopback" in result.error


async def _delivered(conn: Conn, task_id: str) -> TaskDetails | None:
    details = await queries.get_details(conn, task_id)
    return details if details.webhook_deliveries else None
