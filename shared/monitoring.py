"""Read side for live monitoring: throughput per second and compact task rows, one round trip.

The dashboard draws these; they are cheap enough to read several times a second whatever the
number of tasks: throughput comes from per-minute hashes the outcome scripts count into, and
rows read only the few small fields a table needs (never payloads or results).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared import codec, queues
from shared.models import Task
from shared.redis import Conn, guarded

ERROR_PREVIEW_CHARS = 240

# Fields of the task HASH a table row needs (see codec.py for their encodings).
ROW_FIELDS = (
    codec.F_ID,
    codec.F_TYPE,
    codec.F_STATUS,
    codec.F_PRIORITY,
    codec.F_RETRY_COUNT,
    codec.F_MAX_RETRIES,
    codec.F_CREATED,
    codec.F_UPDATED,
    codec.F_RUN_AT,
    codec.F_ERROR,
    codec.F_WORKER,
    codec.F_QUEUE,
    codec.F_PROGRESS,
    codec.F_PROGRESS_MESSAGE,
    codec.F_CANCEL_REQUESTED,
)

Point = tuple[int, int, int]  # (epoch second, completed, failed)


async def ping(conn: Conn) -> None:
    """Raise RedisUnavailable unless Redis answers."""
    await guarded(conn.redis.ping())


async def throughput(conn: Conn, since_s: int, until_s: int) -> list[Point]:
    """Completed and failed counts per second in [since_s, until_s], seconds without any left out.

    One pipelined HGETALL per queue and minute the range touches; the hashes expire after an
    hour. Every queue's counts are summed.
    """
    if until_s < since_s:
        return []
    names = await queues.known(conn)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in names:
            for minute in range(since_s // 60, until_s // 60 + 1):
                pipe.hgetall(conn.queue(name).throughput(minute))
        replies = await guarded(pipe.execute())
    seconds: dict[int, list[int]] = {}
    for fields in replies:
        for name, value in fields.items():
            second_raw, _, kind = name.partition(":")
            second = int(second_raw)
            if since_s <= second <= until_s and kind in ("c", "f"):
                counts = seconds.setdefault(second, [0, 0])
                counts[0 if kind == "c" else 1] += int(value)
    return [(second, c, f) for second, (c, f) in sorted(seconds.items())]


def _opt_int(raw: str | None) -> int | None:
    return int(raw) if raw else None


def _opt_float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _preview(error: str | None) -> str | None:
    if not error:
        return None
    return error if len(error) <= ERROR_PREVIEW_CHARS else error[: ERROR_PREVIEW_CHARS - 1] + "…"


async def task_rows(conn: Conn, task_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Compact rows for several tasks in one round trip, in order; missing ids are skipped.
    Each id is looked for in every queue (events name no queue; the record says which)."""
    if not task_ids:
        return []
    names = await queues.known(conn)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            for name in names:
                pipe.hmget(conn.queue(name).task(task_id), list(ROW_FIELDS))
        replies = await guarded(pipe.execute())
    rows = []
    for i in range(len(task_ids)):
        tried = replies[i * len(names) : (i + 1) * len(names)]
        found = [values for values in tried if values[0]]
        if not found:
            continue
        fields = dict(zip(ROW_FIELDS, found[0], strict=True))
        if not fields[codec.F_ID] or not fields[codec.F_STATUS]:
            continue  # purged (or never existed)
        rows.append(
            {
                "id": fields[codec.F_ID],
                "type": fields[codec.F_TYPE],
                "status": fields[codec.F_STATUS],
                "priority": int(fields[codec.F_PRIORITY] or 0),
                "retries": int(fields[codec.F_RETRY_COUNT] or 0),
                "max_retries": int(fields[codec.F_MAX_RETRIES] or 0),
                "created": int(fields[codec.F_CREATED] or 0),
                "updated": int(fields[codec.F_UPDATED] or 0),
                "run_at": _opt_int(fields[codec.F_RUN_AT]),
                "error": _preview(fields[codec.F_ERROR]),
                "worker": fields[codec.F_WORKER] or None,
                "queue": fields[codec.F_QUEUE] or codec.DEFAULT_QUEUE,
                "progress": _opt_float(fields[codec.F_PROGRESS]),
                "progress_message": fields[codec.F_PROGRESS_MESSAGE] or None,
                "cancel_requested": fields[codec.F_CANCEL_REQUESTED] == "1",
            }
        )
    return rows


def row_from_task(task: Task) -> dict[str, Any]:
    """The same compact row, built from a Task already read (list pages)."""
    return {
        "id": task.id,
        "type": task.type,
        "status": str(task.status),
        "priority": task.priority,
        "retries": task.retry_count,
        "max_retries": task.max_retries,
        "created": codec.to_ms(task.created_at),
        "updated": codec.to_ms(task.updated_at),
        "run_at": codec.to_ms(task.scheduled_for) if task.scheduled_for else None,
        "error": _preview(task.error),
        "worker": None,
        "queue": task.queue,
        "progress": task.progress,
        "progress_message": task.progress_message,
        "cancel_requested": task.cancel_requested,
    }
