"""FastAPI dependencies: the Redis connection, settings, and the API-key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request

from shared.auth import auth_enabled, role_for_key
from shared.models import QUEUE_NAME_PATTERN
from shared.redis import Conn
from shared.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_conn(request: Request) -> Conn:
    conn: Conn = request.app.state.conn
    return conn


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ConnDep = Annotated[Conn, Depends(get_conn)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# A `?queue=` filter (SPEC section 9): a bad name is a 400 like any invalid query.
QueueName = Annotated[str | None, Query(pattern=QUEUE_NAME_PATTERN, max_length=64)]


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """With API_KEYS set, every route needs `Authorization: Bearer KEY` (SPEC section 2).

    Keys in API_READ_KEYS may only read (GET), for dashboards and monitoring.
    """
    refusal = key_refusal(settings, request.headers.get("authorization", ""), request.method)
    if refusal is not None:
        raise refusal


def key_refusal(settings: Settings, authorization: str, method: str) -> HTTPException | None:
    """Why a request with this Authorization header may not go on, or None when it may."""
    if not auth_enabled(settings):
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return HTTPException(
            401,
            "missing API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    role = role_for_key(settings, token)
    if role == "admin" or (role == "read" and method in READ_METHODS):
        return None
    if role == "read":
        return HTTPException(403, "this API key may only read")
    return HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
