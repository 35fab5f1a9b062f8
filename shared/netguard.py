"""Webhook target checks (SPEC section 5): which URLs and addresses a delivery may reach."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from shared.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_webhook_url(url: str) -> tuple[str, str, int]:
    """Split a webhook URL into (scheme, host, port), refusing anything but http and https."""
    if not url.isprintable() or any(char.isspace() for char in url):
        raise ValidationFailed("webhook URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "http://[::1" (an unclosed IPv6 literal)
        raise ValidationFailed(f"webhook URL cannot be parsed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed(
            f"webhook URL must use http or https, not {parts.scheme or 'none'!r}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationFailed(f"webhook URL has a bad port: {url}") from exc
    if not parts.hostname:
        raise ValidationFailed(f"webhook URL has no host: {url}")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address (no loopback, private, link-local, ...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public_address(address.ipv4_mapped)
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Validate a webhook URL at creation: scheme, host, and a literal address's range."""
    _, host, _ = parse_webhook_url(url)
    address = literal_address(host)
    if address is not None and not allow_private and not is_public_address(address):
        raise ValidationFailed(
            f"webhook target {host} is a loopback, private, link-local or reserved address; "
            "set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it"
        )
    if host.lower() in ("localhost", "localhost.localdomain") and not allow_private:
        raise ValidationFailed(
            "webhook target localhost is a loopback address; "
            "set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it"
        )
