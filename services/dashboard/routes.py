"""Dashboard JSON routes: session, snapshot, the live stream, task pages, details, queues and
actions.

Retry and Cancel go through `shared.transitions`, bulk actions through `shared.bulk`, pause
and resume through `shared.queue_control`, schedules through `shared.schedules`: the same
code as the REST API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from services.dashboard import auth
from services.dashboard.hub import RESYNC, Client, Hub, frame, queue_row
from shared import (
    bulk,
    codec,
    monitoring,
    queries,
    queue_control,
    queue_views,
    queues,
    registry,
    schedules,
    sse,
    transitions,
)
from shared.auth import auth_enabled
from shared.errors import RedisUnavailable
from shared.models import QUEUE_NAME_PATTERN, TaskStatus, task_id_or_404
from shared.queue_control import QueueConfig
from shared.queue_views import UnknownQueue
from shared.redis import Conn
from shared.settings import Settings

router = APIRouter(prefix="/api")
MAX_STREAMS = 200
QueueName = Annotated[str, Path(pattern=QUEUE_NAME_PATTERN, max_length=64)]


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _conn(request: Request) -> Conn:
    conn: Conn = request.app.state.conn
    return conn


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class Login(BaseModel):
    key: str = Field(min_length=1, max_length=1000)


@router.get("/session")
async def session(request: Request) -> dict[str, Any]:
    """Whether a key is needed, and what the caller may do (`admin`, `read` or null)."""
    settings = _settings(request)
    return {
        "auth": auth_enabled(settings),
        "role": auth.current_role(request),
        "queue": settings.queue_name,
    }


@router.post("/login")
async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    """Check an API key and set the session cookie the page and its stream then carry."""
    settings = _settings(request)
    if not auth_enabled(settings):
        return {"role": "admin"}
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    role = auth.issue(settings, body.key, response, secure=secure)
    if role is None:
        raise HTTPException(401, "invalid API key")
    return {"role": role}


@router.post("/logout")
async def logout(response: Response) -> dict[str, Any]:
    response.delete_cookie(auth.COOKIE, path="/")
    return {"role": None}


@router.get("/snapshot")
async def snapshot(request: Request, _: auth.Viewer) -> dict[str, Any]:
    """Everything the page shows, with 15 minutes of throughput (what the stream starts with)."""
    return await _hub(request).snapshot(full=True)


async def _full(hub: Hub) -> bytes | None:
    """A snapshot frame, or None while Redis is away (the page shows the hub's trouble frame)."""
    try:
        return frame("snapshot", await hub.snapshot(full=True))
    except RedisUnavailable:
        return None


async def _stream(hub: Hub, client: Client) -> AsyncIterator[bytes]:
    first = await _full(hub)
    yield sse.RETRY + (first or frame("trouble", {"error": "redis unavailable"}))
    behind = first is None  # the page has no full picture yet
    while True:
        try:
            data = await asyncio.wait_for(client.queue.get(), sse.KEEPALIVE_SECONDS)
        except TimeoutError:
            yield sse.KEEPALIVE
            continue
        if data is None:
            return
        if data == RESYNC or (behind and data.startswith(b"event: update")):
            full = await _full(hub)
            behind = full is None
            data = full or frame("trouble", {"error": "redis unavailable"})
        yield data


async def _page(request: Request, _: auth.Viewer) -> AsyncIterator[Client]:
    """A page's place among the hub's clients, from before its stream starts (a full
    dashboard answers 429) until after it ends."""
    hub = _hub(request)
    if len(hub.clients) >= MAX_STREAMS:
        raise sse.TooManyStreams(MAX_STREAMS, "dashboard streams", "dashboard")
    client = Client()
    hub.clients.add(client)
    try:
        yield client
    finally:
        hub.clients.discard(client)


@router.get("/stream", response_class=StreamingResponse)
async def stream(request: Request, client: Annotated[Client, Depends(_page)]) -> StreamingResponse:
    """Server-Sent Events: a `snapshot`, then an `update` every tick (never one per event)."""
    return sse.response(_stream(_hub(request), client))


@router.get("/tasks")
async def list_tasks(
    request: Request,
    _: auth.Viewer,
    status: TaskStatus | None = None,
    task_type: Annotated[str | None, Query(alias="type", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(pattern=QUEUE_NAME_PATTERN, max_length=64)] = None,
) -> dict[str, Any]:
    """Newest first, as compact rows (no payloads), with a cursor for the next page."""
    page = await queries.list_tasks(
        _conn(request),
        status=status,
        task_type=task_type or None,
        limit=limit,
        cursor=cursor,
        queue=queue,
    )
    return {
        "tasks": [monitoring.row_from_task(task) for task in page.tasks],
        "next_cursor": page.next_cursor,
    }


@router.get("/tasks/{task_id}")
async def details(task_id: str, request: Request, _: auth.Viewer) -> dict[str, Any]:
    """The task with its attempts, events and webhook deliveries."""
    found = await queries.get_details(_conn(request), task_id_or_404(task_id))
    return found.model_dump(mode="json")


@router.post("/tasks/{task_id}/retry")
async def retry(task_id: str, request: Request, _: auth.Operator) -> dict[str, Any]:
    """A failed (or cancelled) task runs again with a fresh retry budget."""
    task = await transitions.retry_failed(_conn(request), task_id_or_404(task_id))
    return {"task": monitoring.row_from_task(task)}


@router.post("/tasks/{task_id}/cancel")
async def cancel(task_id: str, request: Request, _: auth.Operator) -> dict[str, Any]:
    """A pending, scheduled or retrying task is cancelled; a running one is interrupted by
    its worker (the row says `cancel_requested`)."""
    task = await transitions.cancel(_conn(request), task_id_or_404(task_id), _settings(request))
    return {"task": monitoring.row_from_task(task)}


class BulkBody(BaseModel):
    """The REST API's bulk body (SPEC section 10): ids, or a filter with limit and cursor."""

    model_config = ConfigDict(extra="forbid")

    action: bulk.BulkAction
    ids: list[str] | None = Field(default=None, max_length=bulk.MAX_BULK)
    filter: bulk.BulkFilter | None = None
    limit: int | None = Field(default=None, ge=1, le=bulk.MAX_BULK)
    cursor: str | None = Field(default=None, max_length=500)


@router.post("/tasks/bulk")
async def bulk_action(body: BulkBody, request: Request, _: auth.Operator) -> dict[str, Any]:
    """Retry, cancel or purge the selected tasks, or those matching a filter."""
    result = await bulk.run(
        _conn(request),
        body.action,
        _settings(request),
        ids=body.ids,
        flt=body.filter,
        limit=body.limit,
        cursor=body.cursor,
    )
    return asdict(result)


@router.get("/bulk/matching")
async def bulk_matching(
    request: Request, _: auth.Viewer, flt: Annotated[bulk.BulkFilter, Query()]
) -> dict[str, Any]:
    """How many tasks a filtered bulk action would take (what its confirmation names)."""
    count, exact = await bulk.matching(_conn(request), flt)
    return {"count": count, "exact": exact}


@router.get("/types")
async def task_types(_: auth.Viewer) -> dict[str, Any]:
    """Registered task types, for the type filter."""
    return {"types": registry.names()}


@router.get("/queues")
async def list_queues(request: Request, _: auth.Viewer) -> dict[str, Any]:
    """Every queue: state, limits, ready depth, counts and the live workers serving it."""
    dead_after = _settings(request).dead_after_seconds
    views = await queue_views.views(_conn(request), dead_after_seconds=dead_after)
    return {"queues": [queue_row(view) for view in views]}


async def _control(
    request: Request, name: str, change: Callable[[Conn, str], Awaitable[QueueConfig]]
) -> dict[str, Any]:
    """Pause or resume a queue the dashboard lists (an unknown name is a 404: the page does
    not create queues). `t` is taken after the write: a live update that started earlier
    may predate it, and the page keeps this answer over such an update."""
    conn = _conn(request)
    if name not in await queues.known(conn):
        raise UnknownQueue(name)
    await change(conn, name)
    t = codec.now_ms()
    dead_after = _settings(request).dead_after_seconds
    view = await queue_views.view(conn, name, dead_after_seconds=dead_after)
    return {"queue": queue_row(view), "t": t}


@router.post("/queues/{name}/pause")
async def pause_queue(name: QueueName, request: Request, _: auth.Operator) -> dict[str, Any]:
    """Start none of the queue's tasks (it still takes and promotes them); running ones finish."""
    return await _control(request, name, queue_control.pause)


@router.post("/queues/{name}/resume")
async def resume_queue(name: QueueName, request: Request, _: auth.Operator) -> dict[str, Any]:
    """Start the queue's tasks again."""
    return await _control(request, name, queue_control.resume)


ScheduleName = Annotated[str, Path(pattern=schedules.SCHEDULE_NAME_PATTERN, max_length=128)]


@router.get("/schedules")
async def list_schedules(request: Request, _: auth.Viewer) -> dict[str, Any]:
    """Every recurring schedule (SPEC section 12): rule, state, next run and last task."""
    rows = await schedules.list_all(_conn(request))
    return {"schedules": [row.model_dump(mode="json") for row in rows]}


@router.post("/schedules/{name}/{action}")
async def schedule_action(
    name: ScheduleName, action: str, request: Request, _: auth.Operator
) -> dict[str, Any]:
    """Pause, resume or trigger a schedule (trigger answers with the task it created too)."""
    conn = _conn(request)
    task = None
    if action == "pause":
        await schedules.pause(conn, name)
    elif action == "resume":
        await schedules.resume(conn, name)
    elif action == "trigger":
        task = monitoring.row_from_task(await schedules.trigger(conn, name))
    else:
        raise HTTPException(404, f"no schedule action {action!r}")
    return {"schedule": (await schedules.get(conn, name)).model_dump(mode="json"), "task": task}
