"""Task routes: create (one or a batch), read, list, details, retry, cancel."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import StringConstraints

from services.api.deps import ConnDep, EmptyIsNone, QueueName, SettingsDep
from services.api.schemas import ERROR_RESPONSES, BatchCreate, BatchCreated, RetryAccepted
from shared import queries, tracing, transitions
from shared.auth import auth_enabled
from shared.errors import ValidationFailed
from shared.keys import client_idempotency_key
from shared.models import Task, TaskCreate, TaskDetails, TaskStatus, task_id_or_404
from shared.producer import Producer
from shared.settings import Settings

router = APIRouter(tags=["tasks"], responses=ERROR_RESPONSES)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
TypeName = Annotated[str, StringConstraints(max_length=100)]  # a `?type=` filter
# SPEC section 13: W3C Trace Context; a malformed one is ignored, never a 400.
TraceParent = Annotated[str | None, Header(include_in_schema=False)]


def _idempotency(key: str | None, request: Request, settings: Settings) -> str | None:
    """The key as the caller's own: with API keys on, each API key has its own keys."""
    if key is None:
        return None
    if not key.strip() or not key.isprintable():
        raise ValidationFailed("Idempotency-Key must be 1..200 printable characters")
    if not auth_enabled(settings):
        return key
    # The key gate (services/api/auth.py) let this request in, so it carries a known key.
    return client_idempotency_key(request.headers["authorization"].partition(" ")[2], key)


CANCEL_REQUESTED = (
    "a running task: its worker interrupts the handler and ends it cancelled, unless the "
    "handler finishes first (`cancel_requested` is true; GET shows how it ended)"
)
REPLAYED = "replayed: what this Idempotency-Key created before (header Idempotent-Replayed: true)"


@router.post(
    "/tasks",
    status_code=status.HTTP_201_CREATED,
    response_model=Task,
    responses={200: {"model": Task, "description": REPLAYED}},
)
async def create_task(
    body: TaskCreate,
    request: Request,
    response: Response,
    conn: ConnDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
    traceparent: TraceParent = None,
) -> Task:
    with tracing.create_span("api", traceparent, body.type) as trace:
        if idempotency_key is None:
            producer: Producer = request.app.state.producer
            return await producer.submit(body, traceparent=trace)
        key = _idempotency(idempotency_key, request, settings)
        tasks, replayed = await transitions.enqueue(
            conn, [body], settings, idempotency_key=key, traceparent=trace, batch=False
        )
    if replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return tasks[0]


@router.post(
    "/tasks/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=BatchCreated,
    responses={200: {"model": BatchCreated, "description": REPLAYED}},
)
async def create_batch(
    body: BatchCreate,
    request: Request,
    response: Response,
    conn: ConnDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
    traceparent: TraceParent = None,
) -> BatchCreated:
    key = _idempotency(idempotency_key, request, settings)
    kinds = ",".join(sorted({item.type for item in body.tasks}))
    with tracing.create_span("api", traceparent, kinds, len(body.tasks)) as trace:
        tasks, replayed = await transitions.enqueue(
            conn, body.tasks, settings, idempotency_key=key, traceparent=trace
        )
    if replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    refs = {item.ref: task.id for item, task in zip(body.tasks, tasks, strict=True) if item.ref}
    return BatchCreated(tasks=tasks, refs=refs)


@router.get("/tasks", response_model=list[Task])
async def list_tasks(
    request: Request,
    response: Response,
    conn: ConnDep,
    status_filter: Annotated[TaskStatus | None, EmptyIsNone, Query(alias="status")] = None,
    task_type: Annotated[TypeName | None, EmptyIsNone, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    queue: QueueName = None,
) -> list[Task]:
    page = await queries.list_tasks(
        conn, status=status_filter, task_type=task_type, limit=limit, cursor=cursor, queue=queue
    )
    if page.next_cursor:
        params = {**request.query_params, "cursor": page.next_cursor}
        response.headers["X-Next-Cursor"] = page.next_cursor
        response.headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return page.tasks


@router.get("/tasks/{task_id}", response_model=Task)
async def get_task(task_id: str, conn: ConnDep) -> Task:
    return await queries.get_task(conn, task_id_or_404(task_id))


@router.get("/tasks/{task_id}/details", response_model=TaskDetails)
async def get_details(task_id: str, conn: ConnDep) -> TaskDetails:
    return await queries.get_details(conn, task_id_or_404(task_id))


@router.post("/tasks/{task_id}/retry", response_model=RetryAccepted)
async def retry_task(task_id: str, conn: ConnDep) -> RetryAccepted:
    await transitions.retry_failed(conn, task_id_or_404(task_id))
    return RetryAccepted(task_id=task_id)


@router.delete(
    "/tasks/{task_id}",
    response_model=Task,
    responses={202: {"model": Task, "description": CANCEL_REQUESTED}},
)
async def cancel_task(
    task_id: str, response: Response, conn: ConnDep, settings: SettingsDep
) -> Task:
    """Cancel a task: 200 once cancelled; 202 for a running one (SPEC section 10)."""
    task = await transitions.cancel(conn, task_id_or_404(task_id), settings)
    if task.cancel_requested:
        response.status_code = status.HTTP_202_ACCEPTED
    return task
