"""HTTP-only shapes: bodies and answers that exist only at the REST boundary."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.bulk import MAX_BULK, BulkAction, BulkFilter
from shared.models import Task, TaskCreate

MAX_BATCH = 1000


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskCreate] = Field(min_length=1, max_length=MAX_BATCH)


class BatchCreated(BaseModel):
    tasks: list[Task]
    # SPEC section 11: each item's ref -> the id of the task it created
    refs: dict[str, str] = Field(default_factory=dict)


class RetryAccepted(BaseModel):
    status: str = "retrying"
    task_id: str


class BulkRequest(BaseModel):
    """Retry, cancel or purge many tasks (SPEC section 10): by `ids`, or by `filter` (then
    `limit` and `cursor` page through what matches); one of the two, or a 400."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"action": "retry", "ids": ["3f1c9d2e-5b6a-4c1d-8e2f-0a1b2c3d4e5f"]},
                {"action": "purge", "filter": {"status": "completed", "queue": "default"}},
            ]
        },
    )

    action: BulkAction = Field(
        description="retry: failed or cancelled tasks run again with a fresh retry budget; "
        "cancel: pending, scheduled, retrying or waiting tasks end cancelled, running ones are "
        "asked to stop; purge: final tasks (completed, failed, cancelled) are deleted with "
        "their history, as retention would"
    )
    ids: list[str] | None = Field(
        default=None,
        max_length=MAX_BULK,
        description=f"task ids (at most {MAX_BULK}); unknown ones are skipped as not_found",
    )
    filter: BulkFilter | None = Field(
        default=None, description="act on tasks matching every given field, newest first"
    )
    limit: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BULK,
        description=f"with filter: tasks taken at most (default {MAX_BULK})",
    )
    cursor: str | None = Field(
        default=None,
        max_length=500,
        description="with filter: the cursor of the previous answer, to go on after it",
    )


class BulkSkipped(BaseModel):
    """Tasks not acted on, by reason."""

    not_found: int = Field(description="no task has this id (never created, or purged)")
    invalid_status: int = Field(
        description="its status does not allow the action (e.g. purge of a task not final)"
    )
    unique_conflict: int = Field(description="retry: another live task holds its unique_key")
    dependency_unmet: int = Field(
        description="retry: one of its dependencies failed, was cancelled or is purged"
    )
    awaited_by_dependent: int = Field(description="purge: a waiting task needs its result")
    duplicate: int = Field(description="the id was listed more than once (acted on once)")
    error: int = Field(description="its record is broken; the other tasks were acted on")


class BulkResponse(BaseModel):
    """What a bulk action did. Acted plus every skipped count is the number of tasks taken."""

    action: BulkAction
    acted: int = Field(description="tasks the action was applied to")
    cancel_requested: int = Field(
        description="cancel: of `acted`, running tasks asked to stop (they end cancelled "
        "when their worker interrupts them, unless they finish first)"
    )
    skipped: BulkSkipped
    cursor: str | None = Field(
        description="filter: more tasks match; send it back with the same filter to go on "
        "(null: none left)"
    )


class ErrorBody(BaseModel):
    error: str
    details: list[Any] = []


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "invalid request",
        401: "missing or wrong API key",
        403: "read-only API key, cross-site write, or unknown Host on loopback",
        404: "no such task",
        409: "not allowed in the task's current state",
        413: "body too large",
        503: "Redis unavailable",
    }.items()
}
