"""The REST gateway: FastAPI app factory, lifespan (Redis, heartbeat), key gate, body limit,
routers, probes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import heartbeat
from services.api.auth import KeyGate
from services.api.deps import ConnDep
from services.api.fast_create import FastCreate
from services.api.routes import bulk, events, queues, schedules, stats, tasks
from services.api.schemas import ERROR_RESPONSES
from shared import health, http_errors, plugins, tracing
from shared.auth import auth_enabled
from shared.models import Stats
from shared.producer import Producer
from shared.redis import create_redis
from shared.request_guard import RequestGuard
from shared.settings import Settings

logger = logging.getLogger(__name__)


class BodyLimit:
    """Refuse bodies over MAX_BODY_BYTES with 413 JSON, whether announced or streamed.

    The body is read here first (it is at most MAX_BODY_BYTES) and handed on whole, so a
    chunked body that grows past the limit is a 413 too, not a parse error further in.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        first = await self._read_body(receive)
        if first is None:
            return await self._refuse(send)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for the disconnect, as usual
            replayed = True
            return first

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> Message | None:
        """The whole body as one message (a disconnect as itself); None when over the limit."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    async def _refuse(self, send: Send) -> None:
        message = f"request body is larger than {self.max_bytes} bytes"
        response = http_errors.error_response(413, message)
        await response({"type": "http"}, _empty_receive, send)


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b""}


def create_app(settings: Settings) -> FastAPI:
    plugins.load_task_modules(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.conn = create_redis(settings)
        # Concurrent single creates share script calls (see shared/producer.py).
        app.state.producer = Producer(app.state.conn, settings)
        app.state.events = events.make_fanout(app.state.conn)  # shared by every SSE stream
        try:
            await app.state.conn.load_scripts()
            await health.warn_about_redis(app.state.conn, "api")
        except Exception as exc:  # Redis may come later: routes answer 503 until it does
            logger.warning("scripts not loaded at start (%s); they load on first use", exc)
        with tracing.configured(settings, "api"):  # SPEC section 13: with OTEL_* set
            async with heartbeat.beating(app.state.conn, settings):
                yield
        await app.state.events.aclose()
        await app.state.producer.aclose()
        await app.state.conn.aclose()

    app = FastAPI(
        title="Task Queue API",
        version="0.1.0",
        lifespan=lifespan,
        description="REST gateway of the distributed task queue. See README.md.",
    )
    app.state.settings = settings
    app.state.open_streams = 0
    http_errors.install(app)
    for prefix, in_schema in (("/api", True), ("", False)):
        for router in (tasks.router, bulk.router, events.router, queues.router, schedules.router):
            app.include_router(router, prefix=prefix, include_in_schema=in_schema)
        app.include_router(_stats_router(), prefix=prefix, include_in_schema=in_schema)
    app.add_api_route(
        "/metrics",
        stats.metrics,
        methods=["GET"],
        tags=["monitoring"],
        response_class=PlainTextResponse,
    )
    _add_probes(app)
    app.add_middleware(FastCreate, settings=settings)  # inside BodyLimit: added first
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if auth_enabled(settings):  # no keys, no gate: not one more layer on every request
        # In front of both create paths and of the body limit: a client without a key gets
        # its 401 whatever its body, and no body is buffered for it (SPEC section 2).
        app.add_middleware(KeyGate, settings=settings, open_paths=_open_paths(app))
    # Outermost: in front of both create paths (FastCreate and the routes), body unread.
    app.add_middleware(RequestGuard, settings=settings)
    _document_errors_as_400(app)
    return app


def _document_errors_as_400(app: FastAPI) -> None:
    """Drop FastAPI's automatic 422 answers from the OpenAPI document: invalid requests get
    400 with the one error shape (shared/http_errors.py), which every route documents."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def _stats_router() -> APIRouter:
    """Health (open, see _open_paths) and stats."""
    router = APIRouter()
    router.add_api_route("/health", stats.health, methods=["GET"], tags=["monitoring"])
    router.add_api_route(
        "/stats",
        stats.stats,
        methods=["GET"],
        response_model=Stats,
        tags=["monitoring"],
        responses=ERROR_RESPONSES,
    )
    return router


def _open_paths(app: FastAPI) -> set[str]:
    """The paths that need no API key: health (SPEC section 2), the probes (they carry no
    key) and the OpenAPI pages. Every other path needs one, unknown paths included."""
    docs = (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url)
    return {"/api/health", "/health", "/livez", "/readyz", *(path for path in docs if path)}


def _add_probes(app: FastAPI) -> None:
    """/livez and /readyz: open like /api/health (probes carry no key), behind the guard."""
    app.add_api_route("/livez", livez, methods=["GET"], tags=["monitoring"])
    app.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        tags=["monitoring"],
        responses={503: {**ERROR_RESPONSES[503], "description": "Redis did not answer"}},
    )


async def livez() -> JSONResponse:
    """Liveness: 200 whenever this process serves HTTP. Never reads Redis, so a Redis
    outage restarts no api (SPEC section 8)."""
    return JSONResponse({"status": "ok"})


async def readyz(conn: ConnDep) -> JSONResponse:
    """Readiness: 200 when Redis answers PING within a second, else 503 with Retry-After."""
    reason = await health.redis_ready(conn)
    if reason is None:
        return JSONResponse({"status": "ok", "redis": "ok"})
    response = http_errors.error_response(503, f"redis unavailable: {reason}")
    response.headers["Retry-After"] = str(health.READY_RETRY_AFTER_SECONDS)
    return response


def app_factory() -> Any:
    """Entry for `uvicorn --factory services.api.app:app_factory`."""
    from shared.settings import get_settings

    return create_app(get_settings())
