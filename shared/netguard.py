"""Webhook target checks (SPEC section 5): which URLs and addresses a delivery may reach."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from shared.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_webhook_url(url: str) -> tuple[str, str, int]:
    """Split a webhook URL into (scheme, host, port), refusing anything but http and https."""
    if not url:
        raise ValidationFailed("webhook URL is empty: give an http:// or https:// URL")
    if not url.isprintable() or any(char.isspace() for char in url):
        raise ValidationFailed("webhook URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "http://[::1" (an unclosed IPv6 literal)
        raise ValidationFailed(f"webhook URL cannot be parsed: {exc}") from exc
    if not parts.scheme:
        raise ValidationFailed(
            f"webhook URL {url!r} has no scheme: it must start with http:// or https://"
        )
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed(f"webhook URL must use http or https, not {parts.scheme!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationFailed(f"webhook URL has a bad port: {url}") from exc
    if not parts.hostname:
        raise ValidationFailed(f"webhook URL has no host: {url}")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


# IPv6 ranges that carry or reach IPv4 (or a private IPv6 range) some other way than plain
# routing, refused whatever this Python's `ipaddress` thinks of them (it changed in 3.12/3.13):
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2002::/16",  # 6to4: the packet goes to the IPv4 address inside (RFC 7526: deprecated)
        "2001::/32",  # Teredo: the same, through a relay
        "fec0::/10",  # site-local (deprecated, still routed on some networks)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0:0/96",  # SIIT IPv4-translated
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)


def is_public_address(address: IPAddress) -> bool:
    """True for a globally routable unicast address (no loopback, private, link-local, ...).

    An IPv4-mapped or NAT64 address is judged by the IPv4 address inside it (DNS64 answers
    NAT64 addresses for IPv4-only receivers); 6to4, Teredo and the other ranges above are
    refused outright."""
    if isinstance(address, ipaddress.IPv6Address):
        inside = embedded_ipv4(address)
        if inside is not None:
            return is_public_address(inside)
        if any(address in network for network in _REFUSED_V6):
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped or well-known NAT64 address carries, else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class NotAnAddress(ValueError):
    """A host that ends in a number, as an IPv4 address does, but is not a valid one."""


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 host as inet_aton and the WHATWG URL standard read it: 0x.. is
    hex, a leading 0 is octal, else decimal; None when it is not a number."""
    base, digits = 10, part
    if part[:2].lower() == "0x":
        base, digits = 16, part[2:] or "0"
    elif len(part) > 1 and part.startswith("0"):
        base, digits = 8, part[1:]
    try:
        return int(digits, base) if digits.isascii() and digits.isalnum() else None
    except ValueError:
        return None


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host means in any spelling resolvers and browsers accept
    (`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`, a trailing dot); None for a name.

    Raises NotAnAddress for a host that ends in a number but is no address (`1.2.3.999`)."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    if not (last.isascii() and (last.isdigit() or last[:2].lower() == "0x")):
        return None  # a name: its last label is not a number
    numbers = [_ipv4_number(part) for part in parts] if len(parts) <= 4 else [None]
    if any(n is None for n in numbers):
        raise NotAnAddress(host)
    *leading, final = [n for n in numbers if n is not None]
    if any(n > 255 for n in leading) or final >= 256 ** (4 - len(leading)):
        raise NotAnAddress(host)
    value = final
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells out (IPv6 in brackets, IPv4 in any form), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return parse_ipv4(host)
    except NotAnAddress:
        return None


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    # RFC 6761: resolvers may answer loopback for every name under .localhost.
    return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Validate a webhook URL at creation: scheme, host, and a literal address's range."""
    _, host, _ = parse_webhook_url(url)
    if ":" in host:
        # Only a bracketed IPv6 literal has a colon here (urlsplit took the port off), and its
        # dotted tail (::ffff:8.8.8.8) is IPv6 notation: it must not be read as an IPv4 host.
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValidationFailed(f"webhook URL host [{host}] is not an IPv6 address") from exc
    else:
        try:
            parse_ipv4(host)  # browsers and httpx refuse such a host; resolvers may read it
        except NotAnAddress as exc:
            raise ValidationFailed(
                f"webhook URL host {host} ends in a number but is not an IPv4 address"
            ) from exc
    if allow_private:
        return
    address = literal_address(host)
    if address is not None and not is_public_address(address):
        # An IPv4-mapped or NAT64 address is named by the IPv4 address it was judged by.
        inside = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        judged = inside or address
        raise ValidationFailed(
            f"webhook target {host} is a loopback, private, link-local or reserved address"
            + (f" ({judged})" if str(judged) != host else "")
            + "; set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it"
        )
    if _is_localhost(host):
        raise ValidationFailed(
            f"webhook target {host} is a loopback address; "
            "set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it"
        )
