"""FastAPI dependencies: the Redis connection and settings; the list filters' query types.

The API key is checked before any of these, in services/api/auth.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import BeforeValidator, StringConstraints

from shared.models import QUEUE_NAME_PATTERN
from shared.redis import Conn
from shared.settings import Settings


async def get_conn(request: Request) -> Conn:
    conn: Conn = request.app.state.conn
    return conn


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ConnDep = Annotated[Conn, Depends(get_conn)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def _empty_as_absent(value: object) -> object:
    return None if value == "" else value


# SPEC section 3 spells a list query `?status=&type=&limit=...`: a filter given with an empty
# value filters nothing, as if it were absent (it is not a 400).
EmptyIsNone = BeforeValidator(_empty_as_absent)
# A `?queue=` filter (SPEC section 9): a bad name is a 400 like any invalid query.
QueueName = Annotated[
    Annotated[str, StringConstraints(pattern=QUEUE_NAME_PATTERN, max_length=64)] | None,
    EmptyIsNone,
    Query(),
]
