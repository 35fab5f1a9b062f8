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


class DependencyNotFound(TaskNotFound):
    """A create names a dependency that is not a task of its queue: a 404 that creates
    nothing (SPEC section 11)."""

    def __init__(self, task_id: str, queue: str) -> None:
        TaskQueueError.__init__(
            self,
            f"dependency {task_id} is not a task of queue {queue}",
            [{"loc": ["body", "depends_on"], "task_id": task_id, "msg": "unknown task"}],
        )
        self.task_id = task_id


class DependencyUnmet(InvalidTransition):
    """A task cannot be retried while one of its dependencies is failed or cancelled (retry
    that one first), or was purged (its result is gone): a 409 (SPEC section 11)."""

    def __init__(self, task_id: str, dependency: str, status: str) -> None:
        how = "was purged" if status == "purged" else f"is {status}: retry it first"
        TaskQueueError.__init__(
            self,
            f"cannot retry task {task_id}: its dependency {dependency} {how}",
            [{"task_id": dependency, "status": status}],
        )
        self.task_id = task_id
        self.current = status


class ValidationFailed(TaskQueueError):
    """A request or payload breaks the contract of SPEC section 3 or 4."""


class RedisUnavailable(TaskQueueError):
    """Redis cannot serve now (down, failing over, loading, full): a 503 with Retry-After."""

    retry_after_seconds = 1

    def __init__(self, reason: str) -> None:
        super().__init__(f"redis unavailable: {reason}")


class StoppedWhileWaiting(Exception):
    """A service was asked to stop before Redis answered at its start: it exits cleanly."""


class UnsupportedRedis(RedisUnavailable):
    """The Redis server cannot run this project (too old, or a feature a setting needs is
    missing): waiting will not help, so a service starting on it stops with this message."""


class ReplicationTimeout(RedisUnavailable):
    """A create reached the primary, but fewer than REDIS_WAIT_REPLICAS replicas confirmed it
    within REDIS_WAIT_TIMEOUT_MS: a failover now could lose it, so it is not acknowledged.
    Retrying with the same Idempotency-Key creates nothing twice (SPEC section 8)."""

    def __init__(self, acknowledged: int, wanted: int, timeout_ms: int) -> None:
        TaskQueueError.__init__(
            self,
            f"redis unavailable: the create reached the primary but {acknowledged} of "
            f"{wanted} replicas confirmed it within {timeout_ms} ms; retry with the same "
            "Idempotency-Key",
            [{"replicas_acknowledged": acknowledged, "replicas_wanted": wanted}],
        )


class UniqueConflict(TaskQueueError):
    """A task of the same queue with this unique_key is not final yet: nothing was created
    (or retried); the answer names that task (a 409, SPEC section 10)."""

    def __init__(self, holder_id: str) -> None:
        super().__init__(
            f"a task with this unique_key is not final yet: {holder_id}",
            [{"task_id": holder_id}],
        )
        self.holder_id = holder_id


class StaleOutcome(TaskQueueError):
    """A consumer reported on an attempt it no longer owns (its lease was taken back)."""


class ReplayPurged(TaskQueueError):
    """An Idempotency-Key still names tasks that RESULT_TTL_SECONDS already purged: there is
    nothing left to replay, and creating anew would break the key's promise (a 409)."""

    def __init__(self, task_ids: list[str]) -> None:
        super().__init__(
            "the tasks this Idempotency-Key created were purged after RESULT_TTL_SECONDS; "
            "nothing was created (use a new key to create again)",
            [{"task_id": task_id, "reason": "purged"} for task_id in task_ids],
        )
        self.task_ids = task_ids


class ScheduleNotFound(TaskNotFound):
    """No recurring schedule has this name (SPEC section 12): a 404, like an unknown task."""

    def __init__(self, name: str) -> None:
        TaskQueueError.__init__(self, f"schedule {name} not found")
        self.task_id = name
        self.name = name
