"""The task model and every JSON shape that crosses a service boundary."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import TaskNotFound


class TaskStatus(StrEnum):
    """Statuses of SPEC section 3."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"  # SPEC section 11: for its dependencies to complete


UNIQUE_KEY_MAX_LENGTH = 200  # SPEC section 10
FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
CANCELLABLE_STATUSES = frozenset(
    {TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RETRYING, TaskStatus.WAITING}
)
RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})

MAX_PAYLOAD_BYTES = 64 * 1024
# A queue name (SPEC section 9); it is the hash tag of every key of the queue.
QUEUE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Ids are lowercase UUID text (transitions._new_id); nothing else may reach a key name, where
# "<id>:events" would name a history list instead of a task record.
TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEFAULT_PRIORITY = 3
DEFAULT_MAX_RETRIES = 2
# SPEC section 11: dependencies one create may name (a 1,000-task fan-in is one join).
MAX_DEPENDENCIES = 1000
REF_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"  # a batch item's name for depends_on
RFC3339_START = re.compile(r"\d{4}-\d\d-\d\d[Tt ]")  # a date, then its time


def task_id_or_404(task_id: str) -> str:
    """`task_id` when it has an id's shape; TaskNotFound (a 404) for anything else."""
    if not TASK_ID.fullmatch(task_id):
        raise TaskNotFound(task_id if len(task_id) <= 64 else f"{task_id[:64]}...")
    return task_id


class TaskCreate(BaseModel):
    """The body of `POST /api/tasks` (seed fields; only type and payload are required)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    payload: Any = Field(description="Any JSON value, at most 64 KiB serialised")
    priority: int = Field(default=DEFAULT_PRIORITY, ge=1, le=5, strict=True)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=10, strict=True)
    scheduled_for: datetime | None = None
    webhook: str | None = Field(default=None, max_length=2048)
    timeout_seconds: float | None = Field(default=None, gt=0, le=86_400, strict=True)
    queue: str | None = Field(
        default=None,
        pattern=QUEUE_NAME_PATTERN,
        description="Named queue (default: the type's own queue, else QUEUE_NAME)",
    )
    unique_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=UNIQUE_KEY_MAX_LENGTH,
        description="While a task of the queue with this key is not final, another create "
        "with it answers 409 naming that task",
    )
    depends_on: list[str] | None = Field(
        default=None,
        max_length=MAX_DEPENDENCIES,
        description="Ids of tasks of the same queue (in a batch, also earlier items' refs): "
        "the task waits until every one has completed (SPEC section 11)",
    )
    ref: str | None = Field(
        default=None,
        pattern=REF_PATTERN,
        description="In a batch: this item's name, for later items' depends_on",
    )

    @field_validator("scheduled_for", mode="before")
    @classmethod
    def _require_rfc3339(cls, value: Any) -> Any:
        # Left lax, pydantic would also read a number (or a text of digits) as Unix seconds.
        readable = value is None or isinstance(value, datetime)
        if not (readable or (isinstance(value, str) and RFC3339_START.match(value))):
            raise ValueError("scheduled_for must be RFC 3339 text, e.g. 2025-12-06T18:30:00Z")
        return value

    @field_validator("scheduled_for")
    @classmethod
    def _require_offset(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("scheduled_for needs a UTC offset, e.g. 2025-12-06T18:30:00Z")
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-14:00 is in year 10000
                raise ValueError("scheduled_for is outside years 1..9999 in UTC") from exc
        return value


class Task(BaseModel):
    """A task as the API returns it; times are aware UTC datetimes."""

    id: str
    type: str
    payload: Any
    status: TaskStatus
    queue: str = "default"
    priority: int
    max_retries: int
    retry_count: int
    scheduled_for: datetime | None = None
    webhook: str | None = None
    timeout_seconds: float | None = None
    unique_key: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    result: Any = None
    # SPEC section 10: the running handler's last report (0..100), kept once it ends.
    progress: float | None = None
    progress_message: str | None = None
    # A cancel of this task was asked for while it ran (the DELETE answered 202); its status
    # says how it ended: cancelled, or the outcome its handler reached first.
    cancel_requested: bool = False
    # SPEC section 12: the recurring schedule that created this task, if one did.
    schedule: str | None = None


class TaskEvent(BaseModel):
    """One transition, as published on `task_events` and kept in a task's history."""

    event: str  # task.<verb>, e.g. task.created, task.claimed, task.completed
    task_id: str
    status: TaskStatus
    at: datetime
    type: str | None = None
    priority: int | None = None
    attempt: int | None = None
    worker: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    progress: float | None = None  # task.progress: percent, 0..100
    message: str | None = None  # task.progress: the handler's message, if any
    schedule: str | None = None  # schedule.fired: the schedule (SPEC section 12)


class Attempt(BaseModel):
    """One run of a task, derived from its events."""

    number: int
    worker: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None  # completed, retrying, failed, requeued, or None while running
    error: str | None = None


class WebhookDelivery(BaseModel):
    """One attempt to deliver a completion webhook."""

    webhook_id: str
    event: str
    attempt: int
    at: datetime
    url: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: float
    outcome: str  # delivered, retrying, failed, refused


class Related(BaseModel):
    """A dependency or dependent of a task (SPEC section 11), with its status now."""

    id: str
    type: str | None = None
    status: TaskStatus | None = None  # None: purged since


class TaskDetails(BaseModel):
    task: Task
    attempts: list[Attempt]
    events: list[TaskEvent]
    webhook_deliveries: list[WebhookDelivery]
    depends_on: list[Related] = Field(default_factory=list)
    dependents: list[Related] = Field(default_factory=list)


class QueueStats(BaseModel):
    """Exact counts of one queue (or, in Stats, of all of them)."""

    total_tasks: int
    pending_count: int
    processing_count: int
    completed_count: int
    failed_count: int
    scheduled_count: int
    retrying_count: int
    cancelled_count: int
    waiting_count: int = 0  # SPEC section 11
    queue_depth_by_priority: dict[str, int]
    ready_count: int = 0  # pending tasks in the ready lists (work and notify lanes)
    delayed_count: int
    notifier_queue_depth: int
    # Ready tasks, by type, that a consumer which does not run their type set aside (they
    # are counted in ready_count): they wait for a worker that has a handler for them.
    parked_by_type: dict[str, int] = Field(default_factory=dict)

    def by_status(self) -> dict[str, int]:
        """The count of each status, keyed by status name (they add up to total_tasks)."""
        return {status.value: getattr(self, f"{status.value}_count") for status in TaskStatus}


class Stats(QueueStats):
    """Totals over every queue (SPEC section 3), with each queue's own under `queues`."""

    worker_count: int
    queues: dict[str, QueueStats] = Field(default_factory=dict)
