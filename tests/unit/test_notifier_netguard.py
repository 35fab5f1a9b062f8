"""Delivery-time address checks and redelivery backoff (no network: a fake resolver)."""

from __future__ import annotations

import ipaddress

import pytest

from services.notifier.netguard import GuardedBackend, RefusedTarget, refusal
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
