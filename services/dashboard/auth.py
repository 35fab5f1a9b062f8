"""Dashboard access: API keys checked once at login, then a signed, short-lived session cookie.

EventSource cannot send headers, so the browser proves itself with an HttpOnly cookie. The
cookie holds no key: it is `v1.<role>.<expiry>.<hmac>`, signed with the key that logged in, so
it works on every dashboard replica and dies when that key leaves API_KEYS. Scripts may send
`Authorization: Bearer KEY` instead. Keys in API_READ_KEYS may look but not Retry or Cancel.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response

from shared.auth import Role, auth_enabled, role_for_key
from shared.settings import Settings

COOKIE = "tq_dashboard"
SESSION_SECONDS = 12 * 3600


def _keys(settings: Settings, role: Role) -> list[str]:
    return settings.api_key_list if role == "admin" else settings.api_read_key_list


def _signature(key: str, role: Role, expiry: int) -> str:
    message = f"tq-dashboard|{role}|{expiry}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def issue(settings: Settings, key: str, response: Response, *, secure: bool) -> Role | None:
    """Check a key and, when it is known, set the session cookie; returns its role."""
    role = role_for_key(settings, key)
    if role is not None:
        expiry = int(time.time()) + SESSION_SECONDS
        response.set_cookie(
            COOKIE,
            f"v1.{role}.{expiry}.{_signature(key, role, expiry)}",
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=secure,
            path="/",
        )
    return role


def _role_from_cookie(settings: Settings, token: str) -> Role | None:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "v1" or parts[1] not in ("admin", "read"):
        return None
    role: Role = "admin" if parts[1] == "admin" else "read"
    if not parts[2].isdigit() or int(parts[2]) < time.time():
        return None
    valid = False
    for key in _keys(settings, role):
        valid |= hmac.compare_digest(parts[3], _signature(key, role, int(parts[2])))
    return role if valid else None


def current_role(request: Request) -> Role | None:
    """The caller's role: admin when auth is off, else from a Bearer key or the cookie."""
    settings: Settings = request.app.state.settings
    if not auth_enabled(settings):
        return "admin"
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return role_for_key(settings, token)
    cookie = request.cookies.get(COOKIE)
    return _role_from_cookie(settings, cookie) if cookie else None


def require_viewer(request: Request) -> Role:
    role = current_role(request)
    if role is None:
        raise HTTPException(401, "an API key is needed", headers={"WWW-Authenticate": "Bearer"})
    return role


def require_operator(role: Annotated[Role, Depends(require_viewer)]) -> Role:
    if role != "admin":
        raise HTTPException(403, "this API key may only read")
    return role


Viewer = Annotated[Role, Depends(require_viewer)]
Operator = Annotated[Role, Depends(require_operator)]
