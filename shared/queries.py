"""The read side for the API and the dashboard: tasks, pages, details, stats. No scans."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from shared import codec
from shared.errors import TaskNotFound, ValidationFailed
from shared.keys import PRIORITIES
from shared.models import Attempt, Stats, Task, TaskDetails, TaskEvent, TaskStatus, WebhookDelivery
from shared.redis import Conn, guarded

MAX_SCAN_FOR_FILTER = 5000  # index entries one page may walk past when filtering by type


async def get_task(conn: Conn, task_id: str) -> Task:
    fields = cast("dict[str, str]", await guarded(conn.redis.hgetall(conn.keys.task(task_id))))
    if not fields:
        raise TaskNotFound(task_id)
    return codec.decode_task(fields)


async def get_tasks(conn: Conn, task_ids: Sequence[str]) -> list[Task]:
    """Several tasks in one round trip, in the given order; ids without a record are skipped."""
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hgetall(conn.keys.task(task_id))
        replies = await guarded(pipe.execute())
    return [codec.decode_task(fields) for fields in replies if fields]


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    next_cursor: str | None


def _encode_cursor(score: float, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{int(score)}:{task_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, task_id = raw.split(":", 1)
        return int(score), task_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("cursor is not valid", [{"loc": ["query", "cursor"]}]) from exc


async def list_tasks(
    conn: Conn,
    *,
    status: TaskStatus | None = None,
    task_type: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Newest first, from the created-time index of one status (or of all tasks).

    The cursor is the (created ms, id) of the last entry returned, so new tasks arriving
    between pages never shift or repeat entries.
    """
    index = conn.keys.index_status(status) if status else conn.keys.index_all
    max_score: float | str = "+inf"
    after: tuple[int, str] | None = None
    if cursor:
        after = _decode_cursor(cursor)
        max_score = after[0]
    found: list[Task] = []
    scanned, offset, last = 0, 0, after
    chunk = max(limit * 2, 100) if task_type else limit + 50
    while len(found) < limit and scanned < MAX_SCAN_FOR_FILTER:
        page = conn.redis.zrevrangebyscore(
            index, max_score, "-inf", start=offset, num=chunk, withscores=True
        )
        entries = cast("list[tuple[str, float]]", await guarded(page))
        offset += len(entries)
        # Equal scores come in reverse member order: skip what the previous page returned.
        fresh = [
            (tid, sc) for tid, sc in entries if not (after and sc == after[0] and tid >= after[1])
        ]
        tasks = {t.id: t for t in await get_tasks(conn, [tid for tid, _ in fresh])}
        for tid, score in fresh:
            scanned += 1
            task = tasks.get(tid)
            last = (int(score), tid)
            if (
                task
                and (task_type is None or task.type == task_type)
                and (not status or task.status == status)
            ):
                found.append(task)
                if len(found) == limit:
                    break
        if len(entries) < chunk:
            return Page(found, _encode_cursor(*last) if len(found) == limit and last else None)
    if len(found) < limit and scanned < MAX_SCAN_FOR_FILTER:
        return Page(found, None)
    return Page(found, _encode_cursor(*last) if last else None)


def derive_attempts(events: Sequence[TaskEvent]) -> list[Attempt]:
    """One Attempt per claim, closed by the outcome event that followed it."""
    attempts: list[Attempt] = []
    for event in events:
        if event.event == "task.claimed":
            attempts.append(
                Attempt(
                    number=event.attempt or len(attempts) + 1,
                    worker=event.worker,
                    started_at=event.at,
                )
            )
        elif attempts and attempts[-1].finished_at is None and event.event in _OUTCOMES:
            attempts[-1].finished_at = event.at
            attempts[-1].outcome = _OUTCOMES[event.event]
            attempts[-1].error = event.error
    return attempts


_OUTCOMES = {
    "task.completed": "completed",
    "task.retrying": "retrying",
    "task.failed": "failed",
    "task.requeued": "requeued",
    "task.recovered": "lost",
}


async def get_details(conn: Conn, task_id: str) -> TaskDetails:
    k = conn.keys
    async with conn.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.task(task_id))
        pipe.lrange(k.task_events(task_id), 0, -1)
        pipe.lrange(k.task_deliveries(task_id), 0, -1)
        fields, raw_events, raw_deliveries = await guarded(pipe.execute())
    if not fields:
        raise TaskNotFound(task_id)
    task = codec.decode_task(fields)
    first_status = (
        TaskStatus.SCHEDULED
        if task.scheduled_for is not None and task.scheduled_for > task.created_at
        else TaskStatus.PENDING
    )
    created = TaskEvent(
        event="task.created",
        task_id=task_id,
        status=first_status,
        at=task.created_at,
        type=task.type,
        priority=task.priority,
    )
    events = [created, *(codec.decode_event(raw) for raw in raw_events)]
    deliveries = [WebhookDelivery.model_validate_json(raw) for raw in raw_deliveries]
    return TaskDetails(
        task=task, attempts=derive_attempts(events), events=events, webhook_deliveries=deliveries
    )


async def get_stats(conn: Conn, *, dead_after_seconds: float) -> Stats:
    """Exact counts in one round trip: counters, queue lengths and live workers (O(1) each)."""
    k = conn.keys
    alive_since = codec.now_ms() - int(dead_after_seconds * 1000)
    async with conn.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.counts)
        for priority in PRIORITIES:
            pipe.llen(k.ready("work", priority))
        for priority in PRIORITIES:
            pipe.llen(k.ready("notify", priority))
        pipe.zcard(k.delayed)
        pipe.zcount(k.heartbeats("worker"), alive_since, "+inf")
        replies = await guarded(pipe.execute())
    counts = {name: int(value) for name, value in replies[0].items()}
    work, notify = replies[1:6], replies[6:11]
    return Stats(
        total_tasks=counts.get("total", 0),
        pending_count=counts.get("pending", 0),
        processing_count=counts.get("processing", 0),
        completed_count=counts.get("completed", 0),
        failed_count=counts.get("failed", 0),
        scheduled_count=counts.get("scheduled", 0),
        retrying_count=counts.get("retrying", 0),
        cancelled_count=counts.get("cancelled", 0),
        worker_count=int(replies[12]),
        queue_depth_by_priority={
            str(p): int(w) + int(n) for p, w, n in zip(PRIORITIES, work, notify, strict=True)
        },
        delayed_count=int(replies[11]),
        notifier_queue_depth=sum(int(n) for n in notify),
    )


async def expired_leases(conn: Conn, limit: int = 500) -> list[str]:
    """Processing tasks whose lease deadline has passed (their consumer stopped renewing)."""
    page = conn.redis.zrangebyscore(conn.keys.leases, "-inf", codec.now_ms(), start=0, num=limit)
    return cast("list[str]", await guarded(page))
