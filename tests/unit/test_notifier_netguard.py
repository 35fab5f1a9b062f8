"""Delivery-time address checks and redelivery backoff (no network: a fake resolver)."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifier.netguard import GuardedBackend, RefusedTarget, refusal, system_resolver
from shared.deliveries import DeliveryClaim, redelivery_at_ms
from shared.netguard import IPAddress
from shared.settings import Settings


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "224.0.0.1", "0.0.0.0", "240.0.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1"],
)  # fmt: skip
def test_notifier_refusal_names_private_addresses(address: str) -> None:
    reason = refusal("h.example", [ipaddress.ip_address(address)])
    assert reason is not None and str(ipaddress.ip_address(address)) in reason


# IPv6 forms that reach a private IPv4 address or a private IPv6 range (gaps of issue 11).
TUNNELLED = [
    "fec0::1",  # site-local (deprecated, still routed by some stacks)
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:5db8:d822::1",  # 6to4 of a public address: 6to4 is refused outright (RFC 7526)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215)
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:0:7f00:1",  # SIIT IPv4-translated
]


@pytest.mark.parametrize("address", TUNNELLED)
def test_notifier_refusal_sees_through_ipv6_tunnels_and_translations(address: str) -> None:
    reason = refusal("h.example", [ipaddress.ip_address(address)])
    assert reason is not None and str(ipaddress.ip_address(address)) in reason


def test_notifier_refusal_accepts_nat64_of_a_public_address() -> None:
    # What DNS64 answers for an IPv4-only receiver on an IPv6-only network.
    assert refusal("h.example", [ipaddress.ip_address("64:ff9b::5db8:d822")]) is None


# Every way inet_aton and the WHATWG URL standard spell 127.0.0.1 (or 10.0.0.1).
IPV4_SPELLINGS = ["2130706433", "0x7f000001", "0X7F000001", "127.1", "127.0.1", "0177.0.0.1",
                  "0x7f.0.0.1", "127.0.0.1.", "017700000001", "0x0a.1", "167772161"]  # fmt: skip


@pytest.mark.parametrize("host", IPV4_SPELLINGS)
async def test_notifier_resolver_reads_every_ipv4_spelling_without_dns(host: str) -> None:
    [address] = await system_resolver(host, 80)
    assert str(address) in ("127.0.0.1", "10.0.0.1")
    with pytest.raises(RefusedTarget, match=str(address).replace(".", r"\.")):
        await GuardedBackend(allow_private=False).connect_tcp(host, 80)


def test_notifier_refusal_accepts_public_addresses() -> None:
    public = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:4700::1111")]
    assert refusal("h.example", public) is None


async def test_notifier_guard_checks_every_resolved_address_before_connecting() -> None:
    async def rebinding(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]

    backend = GuardedBackend(allow_private=False, resolver=rebinding)
    with pytest.raises(RefusedTarget, match=r"127\.0\.0\.1"):
        await backend.connect_tcp("h.example", 80)


def test_notifier_redelivery_backoff_grows_and_is_capped() -> None:
    config = Settings(_env_file=None, retry_backoff_seconds=2, retry_backoff_max_seconds=10)
    for attempt, (low, high) in {1: (1000, 2000), 2: (2000, 4000), 5: (5000, 10000)}.items():
        delay = redelivery_at_ms(attempt, config, now_ms=0)
        assert low <= delay <= high


def test_notifier_lost_attempts_are_the_unsettled_claims() -> None:
    claim = DeliveryClaim("msg_1", "t", "task.completed", "u", 4, 1, None, 0)
    assert list(claim.lost_attempts) == [2, 3]
