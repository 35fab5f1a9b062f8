"""HTTP-only shapes: bodies and answers that exist only at the REST boundary."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.models import Task, TaskCreate

MAX_BATCH = 1000


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskCreate] = Field(min_length=1, max_length=MAX_BATCH)


class BatchCreated(BaseModel):
    tasks: list[Task]


class RetryAccepted(BaseModel):
    status: str = "retrying"
    task_id: str


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
