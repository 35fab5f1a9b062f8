"""Task <-> Redis hash fields, and ms <-> datetime: the only code that knows field encodings.

A task record is a HASH of short fields. Times are int epoch milliseconds; payload and result
are JSON text; absent optional values are absent fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from shared.models import Task, TaskEvent, TaskStatus

# Field names of the task HASH; the Lua scripts use the same literals.
F_ID, F_TYPE, F_PAYLOAD, F_STATUS = "id", "type", "payload", "status"
F_PRIORITY, F_MAX_RETRIES, F_RETRY_COUNT = "priority", "max_retries", "retry_count"
F_RUN_AT, F_WEBHOOK, F_TIMEOUT, F_LANE = "run_at", "webhook", "timeout", "lane"
F_UNIQUE_KEY = "unique_key"
F_DEPENDS_ON = "depends_on"  # comma-separated ids (SPEC section 11); absent: none
F_CREATED, F_UPDATED, F_STARTED, F_COMPLETED = "created", "updated", "started", "completed"
F_ERROR, F_RESULT, F_ATTEMPT, F_WORKER = "error", "result", "attempt", "worker"
F_TOKEN = "token"  # the current claim's fencing token (claim_token in _lib.lua)
# SPEC section 10: a running handler's progress (progress.lua), and a cancel asked of a
# running task (cancel.lua: "1").
F_PROGRESS, F_PROGRESS_MESSAGE = "progress", "progress_message"
F_CANCEL_REQUESTED = "cancel_requested"
F_SCHEDULE = "schedule"  # SPEC section 12: the schedule that created the task; absent: none
# SPEC section 13: the create's W3C traceparent (absent: none), kept for the worker's spans;
# and when the task's current wait began, for a retry (absent: created or run_at).
F_TRACEPARENT, F_DUE = "traceparent", "due"
# The task's queue; records written before named queues have none and are in "default".
F_QUEUE, DEFAULT_QUEUE = "queue", "default"
T = TypeVar("T")


def dumps(value: Any) -> str:
    """Compact JSON text (the wire format everywhere; never pickle)."""
    return orjson.dumps(value).decode()


def loads(raw: str | bytes) -> Any:
    return orjson.loads(raw)


def safe_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, so it can be written to Redis.

    A handler's exception message, or a server reply that was decoded with
    `surrogateescape`, can hold one; redis-py then fails on encoding every call it is in.
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        # Through UTF-16, surrogate pairs written as two code points are joined again and
        # only the lone ones become U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def to_ms(moment: datetime) -> int:
    """Epoch ms, rounded up so a scheduled time is never moved earlier by the rounding."""
    return math.ceil(moment.timestamp() * 1000)


def from_ms(ms: int | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


class CorruptRecord(ValueError):
    """A task HASH that does not decode (edited by hand, truncated, or from another version)."""


def _field(
    fields: dict[str, str], name: str, parse: Callable[[str], T], optional: bool = False
) -> T:
    """Parse one field, naming the field in the error when it is missing or malformed."""
    raw = fields.get(name)
    if raw is None or (optional and raw == ""):
        if optional:
            return None  # type: ignore[return-value]
        raise CorruptRecord(f"task record cannot be decoded: field {name!r} is missing")
    try:
        return parse(raw)
    except (ValueError, TypeError, OverflowError) as exc:
        raise CorruptRecord(
            f"task record cannot be decoded: field {name!r} is malformed ({exc})"
        ) from exc


_TASK_FIELDS = set(Task.model_fields)


def _parsed_task(values: dict[str, Any]) -> Task:
    """A Task of values that already have their types, every field given, built as pydantic's
    own `model_construct` builds one but without its walk over the fields: a worker decodes
    every task it claims, and validating values parsed a line before only checked them again.
    tests/unit/test_codec.py holds this equal to the validated model, field for field."""
    task = object.__new__(Task)
    object.__setattr__(task, "__dict__", values)
    object.__setattr__(task, "__pydantic_fields_set__", _TASK_FIELDS.copy())
    object.__setattr__(task, "__pydantic_extra__", None)
    object.__setattr__(task, "__pydantic_private__", None)
    return task


def decode_task_strict(fields: dict[str, str]) -> Task:
    """Build a Task from its HASH fields (HGETALL with decode_responses); CorruptRecord if bad."""
    broken = fields.get("corrupt")  # claim.lua repaired what it needed: the record was broken
    if broken:
        what = "its events key was not a list" if broken == "events" else f"field {broken!r}"
        raise CorruptRecord(f"task record cannot be decoded: {what} was malformed")
    try:
        return _parsed_task(_task_values(fields))
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        _check_fields(fields)  # names the field that is missing or malformed
        raise CorruptRecord(f"task record cannot be decoded: {exc!r}") from exc


def _task_values(f: dict[str, str]) -> dict[str, Any]:
    """Every field of the Task, parsed to its model type, in the model's order. A missing or
    malformed field raises as its parser does; _check_fields says which one it was."""
    get = f.get
    run_at, timeout, result = get(F_RUN_AT), get(F_TIMEOUT), get(F_RESULT)
    started, completed, progress = get(F_STARTED), get(F_COMPLETED), get(F_PROGRESS)
    return {
        "id": f[F_ID],
        "type": f[F_TYPE],
        "payload": loads(f[F_PAYLOAD]),
        "status": TaskStatus(f[F_STATUS]),
        "queue": get(F_QUEUE) or DEFAULT_QUEUE,
        "priority": int(f[F_PRIORITY]),
        "max_retries": int(f[F_MAX_RETRIES]),
        "retry_count": int(get(F_RETRY_COUNT, "0")),
        "scheduled_for": from_ms(run_at) if run_at else None,
        "webhook": get(F_WEBHOOK) or None,
        "timeout_seconds": _finite(timeout) if timeout else None,
        "unique_key": get(F_UNIQUE_KEY) or None,
        "depends_on": split_ids(get(F_DEPENDS_ON)),
        "created_at": from_ms(f[F_CREATED]),
        "updated_at": from_ms(f[F_UPDATED]),
        "started_at": from_ms(started) if started else None,
        "completed_at": from_ms(completed) if completed else None,
        "error": get(F_ERROR) or None,
        "result": loads(result) if result else None,
        "progress": _finite(progress) if progress else None,
        "progress_message": get(F_PROGRESS_MESSAGE) or None,
        "cancel_requested": get(F_CANCEL_REQUESTED) == "1",
        "schedule": get(F_SCHEDULE) or None,
    }


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


# The fields _task_values parses, each with its parser: (field, parser, optional).
_PARSED_FIELDS: tuple[tuple[str, Callable[[str], Any], bool], ...] = (
    (F_ID, str, False),
    (F_TYPE, str, False),
    (F_PAYLOAD, loads, False),
    (F_STATUS, TaskStatus, False),
    (F_PRIORITY, int, False),
    (F_MAX_RETRIES, int, False),
    (F_RETRY_COUNT, int, False),
    (F_RUN_AT, from_ms, True),
    (F_TIMEOUT, _finite, True),
    (F_CREATED, from_ms, False),
    (F_UPDATED, from_ms, False),
    (F_STARTED, from_ms, True),
    (F_COMPLETED, from_ms, True),
    (F_RESULT, loads, True),
    (F_PROGRESS, _finite, True),
)


def _check_fields(fields: dict[str, str]) -> None:
    """CorruptRecord naming the first parsed field that is missing or malformed."""
    with_defaults = {F_RETRY_COUNT: "0", **fields}  # an absent retry count is 0
    for name, parse, optional in _PARSED_FIELDS:
        _field(with_defaults, name, parse, optional=optional)


def split_ids(raw: str | None) -> list[str]:
    """The ids of a comma-separated field (an id has no comma); [] when absent or empty."""
    return raw.split(",") if raw else []


def _salvage(fields: dict[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    try:
        return parse(fields[name])
    except Exception:
        return default


def salvage_task(fields: dict[str, str], problem: str) -> Task:
    """What can be read of a corrupt record, with the problem as its error (never raises)."""
    epoch = datetime.fromtimestamp(0, tz=UTC)
    created = _salvage(fields, F_CREATED, from_ms, epoch)
    return Task(
        id=fields.get(F_ID) or "?",
        queue=fields.get(F_QUEUE) or DEFAULT_QUEUE,
        type=fields.get(F_TYPE) or "?",
        payload=_salvage(fields, F_PAYLOAD, loads, fields.get(F_PAYLOAD)),
        status=_salvage(fields, F_STATUS, TaskStatus, TaskStatus.FAILED),
        priority=_salvage(fields, F_PRIORITY, int, 3),
        max_retries=_salvage(fields, F_MAX_RETRIES, int, 0),
        retry_count=_salvage(fields, F_RETRY_COUNT, int, 0),
        created_at=created,
        updated_at=_salvage(fields, F_UPDATED, from_ms, created),
        started_at=_salvage(fields, F_STARTED, from_ms, None),
        completed_at=_salvage(fields, F_COMPLETED, from_ms, None),
        error=fields.get(F_ERROR) or problem,
    )


def decode_task(fields: dict[str, str]) -> Task:
    """A Task for readers (API, dashboard): a corrupt record comes back salvaged, its error
    saying what is wrong, so one bad record never breaks a page or a listing."""
    try:
        return decode_task_strict(fields)
    except CorruptRecord as exc:
        return salvage_task(fields, str(exc))


def pairs_to_dict(flat: list[str]) -> dict[str, str]:
    """A flat [k1, v1, k2, v2, ...] reply (HGETALL inside Lua) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def decode_event(raw: str | bytes) -> TaskEvent:
    """Parse one event as the scripts write it (`at_ms`, `retry_at_ms` as integers)."""
    data = loads(raw)
    data["at"] = from_ms(data.pop("at_ms"))
    retry_at = data.pop("retry_at_ms", None)
    data["retry_at"] = from_ms(retry_at) if retry_at else None
    return TaskEvent.model_validate(data)


def event_to_json(event: TaskEvent) -> str:
    """The public JSON of an event (RFC 3339 times), as the SSE stream sends it."""
    return event.model_dump_json(exclude_none=True)
