"""API keys (SPEC section 2): checked in plain ASGI in front of every route but the open ones.

The check cannot be a FastAPI dependency: FastAPI reads and parses a route's JSON body before
it solves the route's dependencies, so a client without a key that sent a malformed body got
400 "malformed JSON body" instead of 401. Here the key is checked before anything reads the
body or the query, for the FastAPI routes and services/api/fast_create.py alike.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import http_errors
from shared.auth import auth_enabled, role_for_key
from shared.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BEARER = {"WWW-Authenticate": "Bearer"}


def key_refusal(settings: Settings, authorization: str, method: str) -> JSONResponse | None:
    """The 401 or 403 answer to a request with this Authorization header, or None when it
    may go on. Keys in API_READ_KEYS may only read (GET), for dashboards and monitoring."""
    if not auth_enabled(settings):
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _refuse(401, "missing API key: send Authorization: Bearer <key>", _BEARER)
    role = role_for_key(settings, token)
    if role == "admin" or (role == "read" and method in READ_METHODS):
        return None
    if role == "read":
        return _refuse(403, "this API key may only read")
    return _refuse(401, "invalid API key", _BEARER)


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    response = http_errors.error_response(status, message)
    response.headers.update(headers or {})
    return response


class KeyGate:
    """With API_KEYS set, answers 401 (403 for a read-only key's write) before the request
    goes any further; `open_paths` (health, probes, the OpenAPI pages) need no key."""

    def __init__(self, app: ASGIApp, settings: Settings, open_paths: Collection[str]) -> None:
        self.app, self.settings, self.open_paths = app, settings, frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        refusal = key_refusal(self.settings, _authorization(scope), scope["method"])
        if refusal is not None:
            return await refusal(scope, receive, send)  # the body is left unread
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> str:
    """The first Authorization header, decoded as Starlette decodes headers."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return ""
