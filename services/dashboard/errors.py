"""The dashboard's one table from errors to HTTP answers: `{"error": ..., "details": [...]}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shared.errors import (
    InvalidTransition,
    RedisUnavailable,
    TaskNotFound,
    TaskQueueError,
    ValidationFailed,
)
from shared.queue_views import UnknownQueue

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[TaskQueueError], int] = {
    ValidationFailed: 400,
    TaskNotFound: 404,
    UnknownQueue: 404,
    InvalidTransition: 409,
    RedisUnavailable: 503,
}


def error_response(status: int, message: str, details: list[Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "details": details or []}, status_code=status)


def install(app: FastAPI) -> None:
    """Register handlers so every failure answers with the JSON error shape, never a trace."""

    @app.exception_handler(TaskQueueError)
    async def _domain(_: Request, exc: TaskQueueError) -> JSONResponse:
        status = next((c for kind, c in STATUS_BY_ERROR.items() if isinstance(exc, kind)), 500)
        return error_response(status, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return error_response(400, f"invalid request: {where}: {first['msg']}", details)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")
