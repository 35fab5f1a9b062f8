"""Queue routes (SPEC section 9): list and read queues, pause and resume them, set limits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.api.deps import ConnDep, SettingsDep
from services.api.schemas import ERROR_RESPONSES
from shared import queue_control, queues
from shared.models import QUEUE_NAME_PATTERN
from shared.queue_control import QueueLimits
from shared.queue_views import QueueView, view, views

router = APIRouter(tags=["queues"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(pattern=QUEUE_NAME_PATTERN, max_length=64)]


@router.get("/queues", response_model=list[QueueView])
async def list_queues(conn: ConnDep, settings: SettingsDep) -> list[QueueView]:
    """Every queue: counts, ready tasks, pause and limits, live workers serving it."""
    return await views(conn, dead_after_seconds=settings.dead_after_seconds)


@router.get("/queues/{name}", response_model=QueueView)
async def get_queue(name: Name, conn: ConnDep, settings: SettingsDep) -> QueueView:
    return await view(conn, name, dead_after_seconds=settings.dead_after_seconds)


@router.post("/queues/{name}/pause", response_model=QueueView)
async def pause_queue(name: Name, conn: ConnDep, settings: SettingsDep) -> QueueView:
    """Start none of its tasks (it still takes and promotes them); running ones finish."""
    await queues.register(conn, name)  # a queue may be paused before its first task
    await queue_control.pause(conn, name)
    return await view(conn, name, dead_after_seconds=settings.dead_after_seconds)


@router.post("/queues/{name}/resume", response_model=QueueView)
async def resume_queue(name: Name, conn: ConnDep, settings: SettingsDep) -> QueueView:
    await queues.register(conn, name)
    await queue_control.resume(conn, name)
    return await view(conn, name, dead_after_seconds=settings.dead_after_seconds)


@router.put("/queues/{name}/limits", response_model=QueueView)
async def set_limits(
    name: Name, limits: QueueLimits, conn: ConnDep, settings: SettingsDep
) -> QueueView:
    """Replace both limits (null removes one), for every worker at once."""
    await queues.register(conn, name)
    await queue_control.set_limits(conn, name, limits)
    return await view(conn, name, dead_after_seconds=settings.dead_after_seconds)
