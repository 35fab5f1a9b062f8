"""Every outbound HTTP call of the system (the only httpx user): webhook tasks and completion
webhooks, through a client that cannot reach refused addresses or follow redirects."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpcore
import httpx

from services.notifier.netguard import GuardedBackend, RefusedTarget, Resolver, system_resolver
from shared.errors import ValidationFailed
from shared.netguard import parse_webhook_url
from shared.settings import Settings

USER_AGENT = "taskqueue-notifier/0.1"
MAX_RESPONSE_BYTES = 64 * 1024  # read past this and the connection is dropped, not reused


@dataclass(frozen=True)
class PostResult:
    """What one POST came to: a status code, or an error, and how long it took."""

    status_code: int | None
    error: str | None
    duration_ms: float
    refused: bool = False  # the target is not allowed: retrying cannot help

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Poster(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult: ...

    async def aclose(self) -> None: ...


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, over a connection pool that dials through GuardedBackend."""

    def __init__(
        self, backend: GuardedBackend, *, verify: ssl.SSLContext | bool, limits: httpx.Limits
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class HttpPoster:
    """POSTs with a total deadline of WEBHOOK_TIMEOUT_SECONDS and the SSRF guard."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.timeout = settings.webhook_timeout_seconds
        backend = GuardedBackend(
            allow_private=settings.webhook_allow_private_networks, resolver=resolver
        )
        limits = httpx.Limits(max_connections=settings.notifier_concurrency * 2)
        self.client = httpx.AsyncClient(
            transport=GuardedTransport(backend, verify=verify, limits=limits),
            follow_redirects=False,  # a redirect could point anywhere the guard never saw
            trust_env=False,  # a proxy from the environment would bypass the guard
            timeout=httpx.Timeout(self.timeout),
            headers={"user-agent": USER_AGENT},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        started = time.monotonic()

        def result(status: int | None, error: str | None, refused: bool = False) -> PostResult:
            elapsed = round((time.monotonic() - started) * 1000, 1)
            return PostResult(status, error, elapsed, refused)

        try:
            parse_webhook_url(url)
        except ValidationFailed as exc:
            return result(None, f"refused: {exc.message}", refused=True)
        request_headers = {"content-type": "application/json", **headers}
        try:
            async with asyncio.timeout(self.timeout):
                async with self.client.stream(
                    "POST", url, content=body, headers=request_headers
                ) as response:
                    await _read_some(response)
        except RefusedTarget as exc:
            return result(None, str(exc), refused=True)
        except (TimeoutError, httpx.TimeoutException):
            return result(None, f"timed out after {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return result(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return result(status, None)
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            return result(status, f"HTTP {status}: redirect to {where} not followed")
        return result(status, f"HTTP {status}")

    async def aclose(self) -> None:
        await self.client.aclose()


async def _read_some(response: httpx.Response) -> None:
    """Read a bounded reply so a keep-alive connection can be reused; ignore its content."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen > MAX_RESPONSE_BYTES:
            return
