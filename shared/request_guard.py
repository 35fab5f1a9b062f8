"""Cross-site write and DNS-rebinding refusal for the HTTP services (plain ASGI, before routes).

With API_KEYS unset (the default) nothing else stops another site's page from POSTing to a
service on this machine. So, in front of every route of the API and the dashboard:

- a write (any method but GET, HEAD, OPTIONS) whose `Origin` is not this service's own origin,
  or that the browser marks `Sec-Fetch-Site: cross-site`, is a 403; clients that send
  neither (curl, SDKs, the producer) are not affected;
- while bound to loopback (BIND_HOST), a request whose `Host` is not localhost (or a name
  under .localhost), 127.x, [::1], the bound address or one of ALLOWED_HOSTS is a 403, reads
  included: a DNS-rebinding page reaches loopback under its own host name, and is
  same-origin in its own eyes, so only the Host header betrays it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from shared.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HEADERS = frozenset({b"host", b"origin", b"sec-fetch-site", b"x-forwarded-host"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def binds_loopback(bind_host: str) -> bool:
    """True when BIND_HOST only accepts connections from this machine."""
    return _is_loopback_name(bind_host.strip("[]"))


def _is_loopback_name(name: str) -> bool:
    # Browsers resolve localhost and *.localhost themselves (RFC 6761): no DNS to rebind.
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None]:
    """A Host header's (lower-case name without brackets or trailing dot, port or None).

    Anything unparsable comes back whole as the name (it then matches nothing)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") if rest[:1] in ("", ":") else "x"  # "x": unparsable
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    if port and not port.isdigit():
        return value, None
    return name.rstrip("."), int(port) if port else None


def _origin_matches(origin: str, host: str) -> bool:
    """Whether `Origin` names the host the request was sent to (scheme left aside: behind a
    TLS proxy the service sees plain HTTP while the page's origin is https)."""
    try:
        parts = urlsplit(origin)
        explicit = parts.port
    except ValueError:
        return False
    if not parts.hostname or parts.scheme not in _DEFAULT_PORTS:
        return False  # includes "null" (sandboxed frames, file: pages)
    default = _DEFAULT_PORTS[parts.scheme]
    name, port = split_host(host)
    # No port in Host: the client used its scheme's default port.
    return name == parts.hostname.rstrip(".") and (explicit or default) == (port or default)


class RequestGuard:
    """Answer 403 `{"error", "details"}` to cross-site writes and, on loopback, unknown hosts."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.check_host = binds_loopback(settings.bind_host)
        self.bind_host = settings.bind_host
        known = frozenset(
            split_host(h)[0] for h in [settings.bind_host, *settings.allowed_host_list]
        )
        # Parsing a Host costs microseconds; a service sees a handful of distinct ones.
        self._known_host = functools.lru_cache(maxsize=64)(functools.partial(_is_known_host, known))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.refusal(scope["method"], _headers(scope))
            if refused is not None:
                return await _send_403(send, *refused)
        await self.app(scope, receive, send)

    def refusal(self, method: str, headers: dict[bytes, str]) -> tuple[str, str, str] | None:
        """(message, header, value) of the reason to refuse, or None to serve the request."""
        host = headers.get(b"host")
        if self.check_host and host is not None and not self._known_host(host):
            return (
                f"unknown Host {_short(host)!r}: bound to loopback (BIND_HOST="
                f"{self.bind_host}), this service answers only localhost, 127.x, [::1], "
                "the bound address and ALLOWED_HOSTS (a DNS-rebinding guard)",
                "host",
                host,
            )
        if method in READ_METHODS:
            return None
        if headers.get(b"sec-fetch-site", "").strip().lower() == "cross-site":
            message = "cross-site write refused (Sec-Fetch-Site: cross-site)"
            return message, "sec-fetch-site", "cross-site"
        origin = headers.get(b"origin")
        if origin is None:
            return None  # not a browser: a browser sends Origin with every cross-site write
        forwarded = headers.get(b"x-forwarded-host", "").split(",")[0].strip()
        if not any(_origin_matches(origin, h) for h in (host, forwarded) if h):
            return (
                f"cross-site write refused: Origin {_short(origin)!r} is not this service's "
                "own origin",
                "origin",
                origin,
            )
        return None


def _is_known_host(known: frozenset[str], host: str) -> bool:
    name, _ = split_host(host)
    return _is_loopback_name(name) or name in known


def _headers(scope: Scope) -> dict[bytes, str]:
    """The first value of each header the guard reads, decoded as Starlette decodes them."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _short(value: str) -> str:
    return value if len(value) <= 100 else f"{value[:100]}..."


async def _send_403(send: Send, message: str, header: str, value: str) -> None:
    body = json.dumps(
        {"error": message, "details": [{"header": header, "value": _short(value)}]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
