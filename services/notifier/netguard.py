"""Private-address refusal at delivery time: resolve once, check every address, connect to it.

The HTTP client connects through `GuardedBackend`, so the address that was checked is the one
dialled (no second lookup a rebinding DNS server could answer differently), while TLS still
verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

import httpcore

from shared.netguard import IPAddress, is_public_address, literal_address

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class RefusedTarget(Exception):
    """The target resolves to an address webhooks may not reach (SPEC section 5)."""


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (a literal address, in any IPv4
    spelling, is itself: read here, not by the C library, as at creation)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def refusal(host: str, addresses: Iterable[IPAddress]) -> str | None:
    """Why a delivery to these addresses is refused, or None when every one is public."""
    blocked = [str(a) for a in addresses if not is_public_address(a)]
    if not blocked:
        return None
    return (
        f"refused: {host} resolves to {', '.join(blocked)} (loopback, private, link-local, "
        "multicast, reserved, or an IPv6 tunnel to IPv4); set "
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow it"
    )


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves and vets a host before connecting."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private, self.resolver = allow_private, resolver
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        reason = None if self.allow_private else refusal(host, addresses)
        if reason is not None:
            raise RefusedTarget(reason)
        last: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedTarget("webhooks never connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
