"""Domain errors: every failure a caller can act on, independent of HTTP."""

from __future__ import annotations

from typing import Any


class TaskQueueError(Exception):
    """Base of every error this package raises on purpose."""

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class TaskNotFound(TaskQueueError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class InvalidTransition(TaskQueueError):
    """The task's current status does not allow the requested action."""

    def __init__(self, task_id: str, current: str, action: str) -> None:
        super().__init__(f"cannot {action} task {task_id}: it is {current}")
        self.task_id = task_id
        self.current = current


class ValidationFailed(TaskQueueError):
    """A request or payload breaks the contract of SPEC section 3 or 4."""


class RedisUnavailable(TaskQueueError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"redis unavailable: {reason}")


class StaleOutcome(TaskQueueError):
    """A consumer reported on an attempt it no longer owns (its lease was taken back)."""
