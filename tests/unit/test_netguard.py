"""Creation-time webhook URL checks (shared/netguard.py, SPEC section 5): no network."""

from __future__ import annotations

import ipaddress

import pytest

from shared.errors import ValidationFailed
from shared.netguard import check_webhook_url, literal_address

# IPv6 literals with a public IPv4 address inside, in the dotted and the hex spelling.
PUBLIC_EMBEDDED = [
    "http://[::ffff:8.8.8.8]/x",  # IPv4-mapped, dotted tail
    "http://[::ffff:808:808]/x",  # the same address, hex tail
    "http://[64:ff9b::8.8.8.8]/x",  # well-known NAT64 prefix, dotted tail
    "http://[64:ff9b::808:808]:8443/x",
    "https://[::FFFF:93.184.216.34]/hook",
]

# ... and with a private, loopback or link-local one: judged by the IPv4 address inside.
PRIVATE_EMBEDDED = [
    ("http://[::ffff:10.0.0.1]/x", "10.0.0.1"),
    ("http://[::ffff:127.0.0.1]:8080/x", "127.0.0.1"),
    ("http://[::ffff:192.168.1.1]/x", "192.168.1.1"),
    ("http://[64:ff9b::10.0.0.1]/x", "10.0.0.1"),
    ("http://[64:ff9b::169.254.169.254]/latest/meta-data", "169.254.169.254"),
]


@pytest.mark.parametrize("url", PUBLIC_EMBEDDED)
def test_ipv6_literals_with_a_public_ipv4_inside_are_accepted(url: str) -> None:
    check_webhook_url(url, allow_private=False)
    check_webhook_url(url, allow_private=True)


@pytest.mark.parametrize(("url", "inside"), PRIVATE_EMBEDDED)
def test_ipv6_literals_with_a_private_ipv4_inside_are_refused_as_private(
    url: str, inside: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_webhook_url(url, allow_private=False)
    message = refused.value.message
    assert "private" in message and "WEBHOOK_ALLOW_PRIVATE_NETWORKS" in message, message
    assert "ends in a number" not in message
    assert inside in message, message  # named by the IPv4 address it was judged by
    # Allowed when private networks are: the URL itself is well formed.
    check_webhook_url(url, allow_private=True)


def test_literal_address_reads_a_dotted_ipv6_tail_as_ipv6() -> None:
    assert literal_address("::ffff:8.8.8.8") == ipaddress.IPv6Address("::ffff:808:808")
    assert literal_address("64:ff9b::8.8.8.8") == ipaddress.IPv6Address("64:ff9b::808:808")


@pytest.mark.parametrize("host", ["1.2.3.999", "10.0.0.1.2", "example.123", "1..1"])
def test_a_host_ending_in_a_number_that_is_no_ipv4_address_is_still_refused(host: str) -> None:
    with pytest.raises(ValidationFailed, match="ends in a number"):
        check_webhook_url(f"http://{host}/", allow_private=True)


@pytest.mark.parametrize("url", ["", "notaurl", "example.com/hook", "//example.com/hook"])
def test_a_url_without_a_scheme_is_refused_in_plain_words(url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_webhook_url(url, allow_private=True)
    message = refused.value.message
    assert "'none'" not in message
    assert ("no scheme" in message or "empty" in message) and "http" in message, message


def test_another_scheme_is_named_in_the_refusal() -> None:
    with pytest.raises(ValidationFailed, match="http or https, not 'ftp'"):
        check_webhook_url("ftp://example.com/x", allow_private=True)
