"""Task handlers: the `@task` decorator, the registry, and loading of TASK_MODULES plugins."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from shared.errors import ValidationFailed
from shared.keys import Lane
from shared.models import QUEUE_NAME_PATTERN, Task
from shared.settings import Settings


class Permanent(Exception):
    """Raised by a handler for a failure no retry can fix (bad input, a resource that is gone):
    the task ends `failed` at once, whatever retry budget it had left. Its message is the
    task's error."""


class TaskCancelled(Exception):
    """Raised by `TaskContext.raise_if_cancelled` once a cancel of the running task was asked
    for (SPEC section 10); the task then ends `cancelled`, without a retry."""


MAX_PROGRESS_MESSAGE_CHARS = 500  # a longer progress message is cut to this length


class RunControl:
    """What a consumer and one run of a handler share: the cancel flag, and where progress
    reports go. The consumer makes one per run (shared.running.Run, which writes reports to
    Redis); a context built elsewhere (a unit test) gets this one, which only keeps them."""

    __slots__ = ("cancelled", "last_progress")

    def __init__(self) -> None:
        # Set (on the event loop) when a cancel reaches the consumer; a thread handler reads
        # it: a plain attribute read is atomic, and it only ever goes from False to True.
        self.cancelled = False
        self.last_progress: tuple[float, str | None] | None = None

    def report(self, percent: float, message: str | None) -> None:
        """Take a checked progress report; called from the handler's thread or task."""
        self.last_progress = (percent, message)


class _Reported:
    """What `TaskContext.progress` returns: done already, so awaiting it is optional."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_REPORTED = _Reported()


def check_progress(percent: Any, message: Any = None) -> tuple[float, str | None]:
    """A progress report as stored: percent a finite number in 0..100 (ValueError, or
    TypeError for a non-number, otherwise), message a string (cut to
    MAX_PROGRESS_MESSAGE_CHARS) or None."""
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise TypeError(f"progress percent must be a number, not {type(percent).__name__}")
    value = float(percent)
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise ValueError(f"progress percent must be within 0..100, not {percent!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress message must be a string, not {type(message).__name__}")
    if message is not None:
        message = message[:MAX_PROGRESS_MESSAGE_CHARS] or None
    return value, message


@dataclass(frozen=True)
class TaskContext:
    """What a handler gets besides its payload.

    SPEC section 10, for async and plain (thread) handlers alike:
    - `ctx.cancelled` turns True once a cancel of the running task reaches its worker. An
      async handler is cancelled outright (CancelledError at its current await); a plain
      handler runs in a thread that cannot be interrupted, so it checks `ctx.cancelled` or
      calls `ctx.raise_if_cancelled()` between steps (it is abandoned, the task ended
      cancelled, if it has not stopped within a second). Once cancelled, the run ends
      `cancelled` whatever the handler returns or raises.
    - `ctx.progress(percent, message=None)` reports progress (0..100). The same call works in
      both: `await ctx.progress(50)` in an async handler, `ctx.progress(50)` in a thread (what
      it returns is already done, so leaving it unawaited is fine). It never waits for Redis:
      the worker writes reports in the background, at most 10 per second per task, the last
      one always (a trailing write, flushed before the outcome).
    """

    task: Task
    attempt: int
    settings: Settings
    control: RunControl = field(default_factory=RunControl, repr=False, compare=False)
    # SPEC section 11: {id: result} of the task's dependencies (empty for a task without).
    dependency_results: dict[str, Any] = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        """True once a cancel of this run was asked for (the handler should stop)."""
        return self.control.cancelled

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelled when a cancel of this run was asked for."""
        if self.control.cancelled:
            raise TaskCancelled(f"task {self.task.id} was cancelled")

    def progress(self, percent: float, message: str | None = None) -> Awaitable[None]:
        """Report progress, 0..100 (ValueError/TypeError otherwise), with an optional message.
        Returns an awaitable that is already done: await it or not."""
        self.control.report(*check_progress(percent, message))
        return _REPORTED


Handler = Callable[[Any, TaskContext], Awaitable[Any] | Any]
PayloadValidator = Callable[[Any, Settings], Any]


@dataclass
class TaskType:
    """One registered task type."""

    name: str
    lane: Lane = Lane.WORK  # WORK: run by workers; NOTIFY: run by the notifier (SMTP, HTTP)
    handler: Handler | None = None
    validate: PayloadValidator | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None  # the type's default queue; a create's own `queue` wins


_registry: dict[str, TaskType] = {}


def register(task_type: TaskType) -> TaskType:
    """Add or replace a task type (a later handler for an existing name keeps its validator)."""
    existing = _registry.get(task_type.name)
    if existing is not None:
        task_type.validate = task_type.validate or existing.validate
        task_type.description = task_type.description or existing.description
        task_type.queue = task_type.queue or existing.queue
    _registry[task_type.name] = task_type
    return task_type


def task(
    name: str,
    *,
    validate: PayloadValidator | None = None,
    description: str = "",
    queue: str | None = None,
) -> Callable[[Handler], Handler]:
    """Register a worker handler: `@task("resize")` over `def resize(payload, ctx): ...`.

    The handler may be async or a plain function; a plain function runs in a thread so it
    never blocks the worker's event loop. Its return value (JSON-serialisable) is the result.
    `queue` names the type's default queue (`@task("resize", queue="media")`); a create that
    names its own queue wins.
    """
    if queue is not None and not re.match(QUEUE_NAME_PATTERN, queue):
        raise ValueError(f"@task({name!r}): {queue!r} is not a queue name")

    def decorate(handler: Handler) -> Handler:
        register(
            TaskType(
                name=name,
                handler=handler,
                validate=validate,
                description=description,
                queue=queue,
            )
        )
        return handler

    return decorate


def get(name: str) -> TaskType | None:
    return _registry.get(name)


def names() -> list[str]:
    return sorted(_registry)


def validate_payload(name: str, payload: Any, settings: Settings) -> TaskType:
    """Check the type is known and its payload valid; returns the type (for its lane)."""
    task_type = _registry.get(name)
    if task_type is None:
        raise ValidationFailed(
            f"unknown task type {name!r}; known types: {', '.join(names())}",
            [{"loc": ["body", "type"], "msg": "unknown task type", "known_types": names()}],
        )
    if task_type.validate is not None:
        task_type.validate(payload, settings)
    return task_type


@dataclass(frozen=True)
class PeriodicSchedule:
    """A schedule declared in code with `@periodic` (SPEC section 12): its name and the body
    of `PUT /api/schedules/{name}` it stands for, upserted when the scheduler starts."""

    name: str
    body: dict[str, Any]


_periodic: dict[str, PeriodicSchedule] = {}


def periodic(
    name: str,
    *,
    cron: str | None = None,
    interval_seconds: int | None = None,
    timezone: str = "UTC",
    queue: str | None = None,
    payload: Any = None,
    task_type: str | None = None,
) -> Callable[[Handler], Handler]:
    """Declare a recurring schedule that runs the decorated handler:
    `@periodic("nightly-report", cron="0 3 * * *", timezone="Europe/Berlin")` over a handler
    (stacked over `@task("report")`, or alone: it then registers the handler as type
    `task_type`, default the schedule's name). Exactly one of cron and interval_seconds; the
    scheduler checks the rest as the REST API does when it upserts it at start."""
    if (cron is None) == (interval_seconds is None):
        raise ValueError(f"@periodic({name!r}): give exactly one of cron and interval_seconds")

    def decorate(handler: Handler) -> Handler:
        registered = next((t for t in _registry.values() if t.handler is handler), None)
        type_name = registered.name if registered else task_type or name
        if registered is None:
            register(TaskType(name=type_name, handler=handler, queue=queue))
        create: dict[str, Any] = {"type": type_name, "payload": payload}
        if queue is not None:
            create["queue"] = queue
        body = {"cron": cron, "interval_seconds": interval_seconds, "timezone": timezone}
        _periodic[name] = PeriodicSchedule(name, {**body, "task": create})
        return handler

    return decorate


def periodic_schedules() -> list[PeriodicSchedule]:
    """Every `@periodic` declaration of the modules loaded so far, by name."""
    return [_periodic[name] for name in sorted(_periodic)]
