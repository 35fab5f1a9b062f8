"""Task handlers: the `@task` decorator, the registry, and loading of TASK_MODULES plugins."""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
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


@dataclass(frozen=True)
class TaskContext:
    """What a handler gets besides its payload."""

    task: Task
    attempt: int
    settings: Settings


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


def load_task_modules(settings: Settings) -> None:
    """Import the built-in types and every module named in TASK_MODULES."""
    importlib.import_module("shared.builtin_tasks")
    for module in settings.task_module_list:
        importlib.import_module(module)
