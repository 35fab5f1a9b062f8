"""Stats, health and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from services.api.deps import ConnDep, QueueName, SettingsDep
from services.api.schemas import ERROR_RESPONSES
from shared import heartbeats, queries
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


async def metrics(conn: ConnDep, settings: SettingsDep) -> PlainTextResponse:
    """Prometheus text format: tasks by queue and status, queue depth, live instances."""
    data = await queries.get_stats(conn, dead_after_seconds=settings.dead_after_seconds)
    counts = await heartbeats.live_counts(conn, settings.dead_after_seconds)
    lines = [
        "# HELP taskqueue_tasks Tasks currently in each status, per queue.",
        "# TYPE taskqueue_tasks gauge",
    ]
    for queue, one in data.queues.items():
        for name, count in one.by_status().items():
            lines.append(f'taskqueue_tasks{{queue="{queue}",status="{name}"}} {count}')
    lines += [
        "# HELP taskqueue_tasks_total Tasks kept (all statuses), per queue.",
        "# TYPE taskqueue_tasks_total gauge",
    ]
    lines += [
        f'taskqueue_tasks_total{{queue="{q}"}} {one.total_tasks}' for q, one in data.queues.items()
    ]
    lines += [
        "# HELP taskqueue_queue_depth Ready tasks per queue and priority.",
        "# TYPE taskqueue_queue_depth gauge",
    ]
    lines += [
        f'taskqueue_queue_depth{{queue="{q}",priority="{p}"}} {n}'
        for q, one in data.queues.items()
        for p, n in one.queue_depth_by_priority.items()
    ]
    lines += [
        "# HELP taskqueue_instances Live service instances by heartbeat.",
        "# TYPE taskqueue_instances gauge",
    ]
    lines += [f'taskqueue_instances{{service="{s}"}} {n}' for s, n in counts.items()]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
