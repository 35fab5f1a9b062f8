"""Stats, health and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from services.api.deps import ConnDep, QueueName, SettingsDep
from services.api.schemas import ERROR_RESPONSES
from shared import heartbeats, queries
from shared import metrics as shared_metrics
from shared.health import redis_warnings
from shared.models import Stats
from shared.redis import guarded

router = APIRouter(tags=["monitoring"], responses=ERROR_RESPONSES)
HEALTH_TIMEOUT_SECONDS = 2.0


@router.get("/stats", response_model=Stats)
async def stats(conn: ConnDep, settings: SettingsDep, queue: QueueName = None) -> Stats:
    """Exact counts over every queue (each queue's own under `queues`), or of one queue."""
    return await queries.get_stats(
        conn, dead_after_seconds=settings.dead_after_seconds, queue=queue
    )


@router.get("/health", responses={503: {"description": "Redis unreachable"}})
async def health(conn: ConnDep, settings: SettingsDep) -> JSONResponse:
    """200 with live instances per service (and `redis_warnings`: a Redis set to evict keys
    stays up but may lose tasks), or 503 `degraded` when Redis does not answer."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            if conn.topology != "cluster":
                # (On a cluster PING goes to one default node, maybe a shard that is down while
                # the rest serve; live_counts asks the shard of the global keys.)
                await guarded(conn.redis.ping())
            counts = await heartbeats.live_counts(conn, settings.dead_after_seconds)
            warnings = await redis_warnings(conn)
    except Exception as exc:
        body: dict[str, Any] = {
            "status": "degraded",
            "redis": "unavailable",
            "reason": str(exc) or "timeout",
        }
        return JSONResponse(body, status_code=503)
    services = {
        name: {"instances": counts[name]}
        for name in ("worker", "scheduler", "notifier", "dashboard")
    }
    body = {"status": "ok", "redis": "ok", "services": services, "redis_warnings": warnings}
    return JSONResponse(body)


async def metrics(conn: ConnDep, settings: SettingsDep) -> Response:
    """Prometheus text format: exact gauges of tasks by queue and status, ready depth and live
    instances; histograms of run time and queue wait by queue, type and outcome; counters of
    retries, recoveries and webhook deliveries (shared/metrics.py)."""
    snapshot = await shared_metrics.read(conn, settings.dead_after_seconds)
    return Response(shared_metrics.render(snapshot), media_type=shared_metrics.CONTENT_TYPE)
