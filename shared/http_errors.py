"""The one table from errors to HTTP answers, for the api and the dashboard alike: always
`{"error": ..., "details": [...]}` (SPEC section 3), never a 500 with a trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from shared.errors import (
    InvalidTransition,
    RedisUnavailable,
    ReplayPurged,
    TaskNotFound,
    TaskQueueError,
    UniqueConflict,
    ValidationFailed,
)
from shared.queue_views import UnknownQueue
from shared.sse import TooManyStreams

logger = logging.getLogger(__name__)

# Subclasses answer as their base: DependencyNotFound and ScheduleNotFound as TaskNotFound,
# DependencyUnmet as InvalidTransition, ReplicationTimeout as RedisUnavailable.
STATUS_BY_ERROR: dict[type[TaskQueueError], int] = {
    ValidationFailed: 400,
    TaskNotFound: 404,
    UnknownQueue: 404,
    InvalidTransition: 409,
    ReplayPurged: 409,  # an Idempotency-Key whose tasks are gone: never created anew
    UniqueConflict: 409,  # a live task holds the unique_key: details name it
    TooManyStreams: 429,
    RedisUnavailable: 503,
}


def error_response(status: int, message: str, details: list[Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "details": details or []}, status_code=status)


def domain_error(exc: TaskQueueError) -> JSONResponse:
    """The answer to a domain error, by the table above (500 for a kind not in it)."""
    status = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind)), 500)
    response = error_response(status, exc.message, exc.details)
    if isinstance(exc, TooManyStreams | RedisUnavailable):
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
    return response


def redis_down(exc: Exception) -> JSONResponse:
    """A 503 for a redis-py error that reached a route unwrapped."""
    response = error_response(503, f"redis unavailable: {exc}")
    response.headers["Retry-After"] = str(RedisUnavailable.retry_after_seconds)
    return response


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic error entries without their echo of the input (it may be huge or secret)."""
    return [
        {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def _summary(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid request: {where}: {first['msg']}{more}"


def invalid_request(exc: RequestValidationError) -> JSONResponse:
    """A 400 naming the first invalid field (and how many more)."""
    details = _clean(list(exc.errors()))
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(400, "malformed JSON body", details)
    return error_response(400, _summary(details), details)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    @app.exception_handler(TaskQueueError)
    async def _domain(_: Request, exc: TaskQueueError) -> JSONResponse:
        return domain_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(exc)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        return redis_down(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")
