"""Task <-> Redis hash fields, and ms <-> datetime: the only code that knows field encodings.

A task record is a HASH of short fields. Times are int epoch milliseconds; payload and result
are JSON text; absent optional values are absent fields.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.models import Task, TaskEvent, TaskStatus

# Field names of the task HASH; the Lua scripts use the same literals.
F_ID, F_TYPE, F_PAYLOAD, F_STATUS = "id", "type", "payload", "status"
F_PRIORITY, F_MAX_RETRIES, F_RETRY_COUNT = "priority", "max_retries", "retry_count"
F_RUN_AT, F_WEBHOOK, F_TIMEOUT, F_LANE = "run_at", "webhook", "timeout", "lane"
F_CREATED, F_UPDATED, F_STARTED, F_COMPLETED = "created", "updated", "started", "completed"
F_ERROR, F_RESULT, F_ATTEMPT, F_WORKER = "error", "result", "attempt", "worker"


def dumps(value: Any) -> str:
    """Compact JSON text (the wire format everywhere; never pickle)."""
    return orjson.dumps(value).decode()


def loads(raw: str | bytes) -> Any:
    return orjson.loads(raw)


def to_ms(moment: datetime) -> int:
    """Epoch ms, rounded up so a scheduled time is never moved earlier by the rounding."""
    return math.ceil(moment.timestamp() * 1000)


def from_ms(ms: int | str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _opt_ms(fields: dict[str, str], name: str) -> datetime | None:
    raw = fields.get(name)
    return from_ms(raw) if raw else None


def decode_task(fields: dict[str, str]) -> Task:
    """Build a Task from its HASH fields (as returned by HGETALL with decode_responses)."""
    result_raw = fields.get(F_RESULT)
    timeout_raw = fields.get(F_TIMEOUT)
    return Task(
        id=fields[F_ID],
        type=fields[F_TYPE],
        payload=loads(fields[F_PAYLOAD]),
        status=TaskStatus(fields[F_STATUS]),
        priority=int(fields[F_PRIORITY]),
        max_retries=int(fields[F_MAX_RETRIES]),
        retry_count=int(fields.get(F_RETRY_COUNT, 0)),
        scheduled_for=_opt_ms(fields, F_RUN_AT),
        webhook=fields.get(F_WEBHOOK) or None,
        timeout_seconds=float(timeout_raw) if timeout_raw else None,
        created_at=from_ms(fields[F_CREATED]),
        updated_at=from_ms(fields[F_UPDATED]),
        started_at=_opt_ms(fields, F_STARTED),
        completed_at=_opt_ms(fields, F_COMPLETED),
        error=fields.get(F_ERROR) or None,
        result=loads(result_raw) if result_raw else None,
    )


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
