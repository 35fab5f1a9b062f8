"""Recurring schedule routes (SPEC section 12): create or replace, read, list, delete, pause,
resume, and trigger; everything else lives in shared/schedules.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from services.api.deps import ConnDep, SettingsDep
from services.api.schemas import ERROR_RESPONSES
from shared import schedules
from shared.models import Task
from shared.schedules import SCHEDULE_NAME_PATTERN, Schedule, ScheduleBody

router = APIRouter(tags=["schedules"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(pattern=SCHEDULE_NAME_PATTERN, max_length=128)]


@router.put(
    "/schedules/{name}",
    status_code=status.HTTP_201_CREATED,
    response_model=Schedule,
    responses={200: {"model": Schedule, "description": "replaced"}},
)
async def put_schedule(
    name: Name, body: ScheduleBody, response: Response, conn: ConnDep, settings: SettingsDep
) -> Schedule:
    """Create (201) or replace (200) a schedule; its next tick counts from now."""
    schedule, created = await schedules.put(conn, name, body, settings)
    if not created:
        response.status_code = status.HTTP_200_OK
    return schedule


@router.get("/schedules", response_model=list[Schedule])
async def list_schedules(conn: ConnDep) -> list[Schedule]:
    return await schedules.list_all(conn)


@router.get("/schedules/{name}", response_model=Schedule)
async def get_schedule(name: Name, conn: ConnDep) -> Schedule:
    return await schedules.get(conn, name)


@router.delete("/schedules/{name}", response_model=Schedule)
async def delete_schedule(name: Name, conn: ConnDep) -> Schedule:
    """Remove a schedule (tasks it created stay); answers with it as it was."""
    return await schedules.delete(conn, name)


@router.post("/schedules/{name}/pause", response_model=Schedule)
async def pause_schedule(name: Name, conn: ConnDep) -> Schedule:
    return await schedules.pause(conn, name)


@router.post("/schedules/{name}/resume", response_model=Schedule)
async def resume_schedule(name: Name, conn: ConnDep) -> Schedule:
    """Fire again from the next tick after now (ticks missed while paused do not fire)."""
    return await schedules.resume(conn, name)


@router.post("/schedules/{name}/trigger", status_code=status.HTTP_201_CREATED, response_model=Task)
async def trigger_schedule(name: Name, conn: ConnDep) -> Task:
    """Fire now, outside the ticks: one new task; the next tick stays as it was."""
    return await schedules.trigger(conn, name)
