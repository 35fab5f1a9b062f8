"""The dashboard service: app factory, lifespan (Redis + live hub), page, static files, health
and the liveness and readiness probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.dashboard import routes
from services.dashboard.hub import Hub
from shared import health, http_errors, monitoring, plugins
from shared.redis import create_redis
from shared.request_guard import RequestGuard
from shared.settings import Settings

logger = logging.getLogger(__name__)
STATIC = Path(str(resources.files("services.dashboard") / "static"))
HEALTH_TIMEOUT_SECONDS = 2.0

# Everything comes from this origin: no CDN, no inline script, works offline.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def create_app(settings: Settings, *, tick_seconds: float | None = None) -> FastAPI:
    plugins.load_task_modules(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conn = create_redis(settings)
        try:
            await conn.load_scripts()
            await health.warn_about_redis(conn, "dashboard")
        except Exception as exc:  # Redis may come later: the hub retries, routes answer 503
            logger.warning("scripts not loaded at start (%s); they load on first use", exc)
        hub = Hub(conn, settings, **({"tick_seconds": tick_seconds} if tick_seconds else {}))
        app.state.conn, app.state.hub = conn, hub
        stop = asyncio.Event()
        runner = asyncio.create_task(hub.run(stop))
        logger.info("dashboard on http://%s:%d/", settings.bind_host, settings.dashboard_port)
        try:
            yield
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await conn.aclose()

    app = FastAPI(
        title="Task Queue Dashboard",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    http_errors.install(app)
    app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/favicon.ico", _favicon, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", _healthz, methods=["GET"])
    app.add_api_route("/livez", _livez, methods=["GET"])
    app.add_api_route("/readyz", _readyz, methods=["GET"])
    app.add_middleware(RequestGuard, settings=settings)  # inside SecurityHeaders: added first
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    """Add SECURITY_HEADERS to every HTTP answer (plain ASGI: streams pass straight through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _favicon() -> FileResponse:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def _healthz(request: Request) -> JSONResponse:
    """For compose: 200 when Redis answers, 503 `degraded` when it does not."""
    hub: Hub = request.app.state.hub
    body: dict[str, Any] = {"clients": len(hub.clients), "subscribed": hub.subscribed.is_set()}
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await monitoring.ping(request.app.state.conn)
    except Exception as exc:
        reason = str(exc) or "timeout"
        return JSONResponse(
            {"status": "degraded", "redis": "unavailable", "reason": reason, **body},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "redis": "ok", **body})


async def _livez() -> JSONResponse:
    """Liveness: 200 whenever this process serves HTTP; never reads Redis (SPEC section 8)."""
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when Redis answers PING within a second, else 503 with Retry-After."""
    reason = await health.redis_ready(request.app.state.conn)
    if reason is None:
        return JSONResponse({"status": "ok", "redis": "ok"})
    response = http_errors.error_response(503, f"redis unavailable: {reason}")
    response.headers["Retry-After"] = str(health.READY_RETRY_AFTER_SECONDS)
    return response


def app_factory() -> Any:
    """Entry for `uvicorn --factory services.dashboard.app:app_factory`."""
    from shared.settings import get_settings

    return create_app(get_settings())
