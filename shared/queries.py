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
    between pages never shift or repeat entries. Whole records (payloads, results up to
    1 MiB) are read only for the tasks the page returns: a type filter first reads just
    the `type` and `status` of the entries it walks past.
    """
    index = conn.keys.index_status(status) if status else conn.keys.index_all
    max_score: float | str = "+inf"
    after: tuple[int, str] | None = None
    if cursor:
        after = _decode_cursor(cursor)
        max_score = after[0]
    found: list[Task] = []
    scanned, offset, last = 0, 0, after
    while len(found) < limit and scanned < MAX_SCAN_FOR_FILTER:
        want = limit - len(found)
        chunk = max(want * 2, 200) if task_type else want + 50
        page = conn.redis.zrevrangebyscore(
            index, max_score, "-inf", start=offset, num=chunk, withscores=True
        )
        entries = cast("list[tuple[str, float]]", await guarded(page))
        candidates = await _candidates(conn, entries, after, status, task_type)
        # Walk the index up to the entry that fills the page; only those picks are read whole.
        picks: list[str] = []
        walked = 0
        for tid, score, match in candidates:
            walked += 1
            scanned += 1
            last = (int(score), tid)
            if match:
                picks.append(tid)
                if len(picks) == want:
                    break
        # Offsets count from the first entry at max_score: resume right after the last one
        # walked, which is not the chunk's end when the page filled early.
        offset += len(entries) - len(candidates) + walked
        found += [
            task
            for task in await get_tasks(conn, picks)
            # A task can change status between the index read and this one: keep it exact.
            if not status or task.status == status
        ]
        if len(entries) < chunk and walked == len(candidates):
            return Page(found, _encode_cursor(*last) if len(found) == limit and last else None)
    if len(found) < limit and scanned < MAX_SCAN_FOR_FILTER:
        return Page(found, None)
    return Page(found, _encode_cursor(*last) if last else None)


async def _candidates(
    conn: Conn,
    entries: list[tuple[str, float]],
    after: tuple[int, str] | None,
    status: TaskStatus | None,
    task_type: str | None,
) -> list[tuple[str, float, bool]]:
    """Index entries not on an earlier page, each with whether it may belong on this one.

    With a type filter, HMGET of `type` and `status` decides (a few bytes per entry); without
    one every entry is a candidate, and the full read of the picks drops any purged since.
    """
    # Equal scores come in reverse member order: skip what the previous page returned.
    fresh = [(tid, sc) for tid, sc in entries if not (after and sc == after[0] and tid >= after[1])]
    if not task_type or not fresh:
        return [(tid, sc, True) for tid, sc in fresh]
    async with conn.redis.pipeline(transaction=False) as pipe:
        for tid, _ in fresh:
            pipe.hmget(conn.keys.task(tid), [codec.F_TYPE, codec.F_STATUS])
        replies = cast("list[list[str | None]]", await guarded(pipe.execute()))
    return [
        (tid, sc, kind == task_type and (not status or current == status))
        for (tid, sc), (kind, current) in zip(fresh, replies, strict=True)
    ]


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
    alive_since = await conn.server_ms() - int(dead_after_seconds * 1000)
    lists = [*k.ready_all("work"), *k.ready_all("notify")]
    async with conn.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.counts)
        for name in lists:
            pipe.llen(name)
        pipe.hmget(k.ready_skips, lists)
        pipe.zcard(k.delayed)
        pipe.zcount(k.heartbeats("worker"), alive_since, "+inf")
        replies = await guarded(pipe.execute())
    counts = {name: int(value) for name, value in replies[0].items()}
    # Cancelled ids stay in their ready list until a claim drops them (cancel.lua).
    depths = [int(n) - int(skip or 0) for n, skip in zip(replies[1:11], replies[11], strict=True)]
    work, notify = depths[:5], depths[5:]
    delayed, workers = replies[12], replies[13]
    return Stats(
        total_tasks=counts.get("total", 0),
        pending_count=counts.get("pending", 0),
        processing_count=counts.get("processing", 0),
        completed_count=counts.get("completed", 0),
        failed_count=counts.get("failed", 0),
        scheduled_count=counts.get("scheduled", 0),
        retrying_count=counts.get("retrying", 0),
        cancelled_count=counts.get("cancelled", 0),
        worker_count=int(workers),
        queue_depth_by_priority={
            str(p): int(w) + int(n) for p, w, n in zip(PRIORITIES, work, notify, strict=True)
        },
        delayed_count=int(delayed),
        notifier_queue_depth=sum(int(n) for n in notify),
    )


async def expired_leases(conn: Conn, limit: int = 500) -> list[str]:
    """Processing tasks whose lease deadline has passed (their consumer stopped renewing)."""
    now = await conn.server_ms()  # deadlines are the server's clock (see Conn.server_ms)
    page = conn.redis.zrangebyscore(conn.keys.leases, "-inf", now, start=0, num=limit)
    return cast("list[str]", await guarded(page))
