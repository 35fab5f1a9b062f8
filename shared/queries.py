"""The read side for the API and the dashboard: tasks, pages, details, stats. No scans.

Reads by task id find the task's queue themselves (`queues.locate`); lists and stats cover
one queue when asked, else every queue there is.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from shared import codec, queues
from shared.errors import TaskNotFound, ValidationFailed
from shared.keys import PRIORITIES, Keys, Lane
from shared.models import (
    Attempt,
    QueueStats,
    Related,
    Stats,
    Task,
    TaskDetails,
    TaskEvent,
    TaskStatus,
    WebhookDelivery,
)
from shared.redis import Conn, guarded

MAX_SCAN_FOR_FILTER = 5000  # index entries one page may walk past when filtering by type


async def get_task(conn: Conn, task_id: str, *, queue: str | None = None) -> Task:
    """One task; without `queue`, its queue is looked up. Raises TaskNotFound."""
    k = conn.queue(queue) if queue else await queues.locate(conn, task_id)
    fields = cast("dict[str, str]", await guarded(conn.redis.hgetall(k.task(task_id))))
    if not fields:
        raise TaskNotFound(task_id)
    return _decode(fields, k)


def _decode(fields: dict[str, str], k: Keys) -> Task:
    fields.setdefault(codec.F_QUEUE, k.queue)  # written before named queues: in its key
    return codec.decode_task(fields)


async def get_tasks(conn: Conn, task_ids: Sequence[str], *, queue: str | None = None) -> list[Task]:
    """Several tasks of one queue in one round trip, in the given order; ids without a record
    are skipped."""
    k = conn.queue(queue)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hgetall(k.task(task_id))
        replies = await guarded(pipe.execute())
    return [_decode(fields, k) for fields in replies if fields]


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
    queue: str | None = None,
) -> Page:
    """Newest first, from the created-time index of one status (or of all tasks), of one
    queue or of all of them.

    The cursor is the (created ms, id) of the last entry returned, so new tasks arriving
    between pages never shift or repeat entries. Whole records (payloads, results up to
    1 MiB) are read only for the tasks the page returns: a type filter first reads just
    the `type` and `status` of the entries it walks past. Across queues, each queue's page
    after the cursor is read (concurrently) and the newest `limit` of them kept.
    """
    if cursor:
        _decode_cursor(cursor)  # a bad cursor is a 400 before anything is read
    names = [queue] if queue else await queues.known(conn)
    pages = await asyncio.gather(
        *(_list_queue(conn, conn.queue(n), status, task_type, limit, cursor) for n in names)
    )
    if len(pages) == 1:
        return pages[0]
    merged = sorted(
        (task for page in pages for task in page.tasks),
        key=lambda task: (round(task.created_at.timestamp() * 1000), task.id),
        reverse=True,
    )
    found = merged[:limit]
    more = len(merged) > limit or any(page.next_cursor for page in pages)
    if not (more and found):
        return Page(found, None)
    last = found[-1]
    return Page(found, _encode_cursor(round(last.created_at.timestamp() * 1000), last.id))


async def _list_queue(
    conn: Conn,
    k: Keys,
    status: TaskStatus | None,
    task_type: str | None,
    limit: int,
    cursor: str | None,
) -> Page:
    index = k.index_status(status) if status else k.index_all
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
        candidates = await _candidates(conn, k, entries, after, status, task_type)
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
            for task in await get_tasks(conn, picks, queue=k.queue)
            # A task can change status between the index read and this one: keep it exact.
            if not status or task.status == status
        ]
        if len(entries) < chunk and walked == len(candidates):
            # The index is walked to its end: nothing is left for a next page, even when
            # this one filled on its last entry (a cursor would only lead to an empty page).
            return Page(found, None)
    if len(found) < limit and scanned < MAX_SCAN_FOR_FILTER:
        return Page(found, None)
    return Page(found, _encode_cursor(*last) if last else None)


async def _candidates(
    conn: Conn,
    k: Keys,
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
            pipe.hmget(k.task(tid), [codec.F_TYPE, codec.F_STATUS])
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
    "task.cancelled": "cancelled",  # a running task cancelled on request (SPEC section 10)
}


async def get_details(conn: Conn, task_id: str) -> TaskDetails:
    k = await queues.locate(conn, task_id)
    async with conn.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.task(task_id))
        pipe.lrange(k.task_events(task_id), 0, -1)
        pipe.lrange(k.task_deliveries(task_id), 0, -1)
        pipe.smembers(k.task_dependents(task_id))
        fields, raw_events, raw_deliveries, dependents = await guarded(pipe.execute())
    if not fields:
        raise TaskNotFound(task_id)
    task = _decode(fields, k)
    stored = [codec.decode_event(raw) for raw in raw_events]
    created = TaskEvent(
        event="task.created",
        task_id=task_id,
        status=_created_status(task, stored[0] if stored else None),
        at=task.created_at,
        type=task.type,
        priority=task.priority,
    )
    events = [created, *stored]
    deliveries = [WebhookDelivery.model_validate_json(raw) for raw in raw_deliveries]
    related = await _related(conn, k, [*task.depends_on, *sorted(dependents)])
    return TaskDetails(
        task=task,
        attempts=derive_attempts(events),
        events=events,
        webhook_deliveries=deliveries,
        depends_on=related[: len(task.depends_on)],
        dependents=related[len(task.depends_on) :],
    )


def _created_status(task: Task, first: TaskEvent | None) -> TaskStatus:
    """The status enqueue.lua gave the task (its created event is derived, not stored)."""
    if task.depends_on:  # SPEC section 11: waiting, or cancelled at once, or as any task
        if first is None and task.status == TaskStatus.WAITING:
            return TaskStatus.WAITING
        if first is not None and first.event == "task.cancelled" and first.at == task.created_at:
            return TaskStatus.CANCELLED
        if first is not None and first.event in ("task.released", "task.cancelled"):
            return TaskStatus.WAITING
    if task.scheduled_for is not None and task.scheduled_for > task.created_at:
        return TaskStatus.SCHEDULED
    return TaskStatus.PENDING


async def _related(conn: Conn, k: Keys, task_ids: Sequence[str]) -> list[Related]:
    """The type and status now of each task (SPEC section 11); one round trip, none when
    there is no task to read."""
    if not task_ids:
        return []
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hmget(k.task(task_id), [codec.F_TYPE, codec.F_STATUS])
        replies = cast("list[list[str | None]]", await guarded(pipe.execute()))
    return [
        Related(id=task_id, type=kind, status=_status_or_none(status))
        for task_id, (kind, status) in zip(task_ids, replies, strict=True)
    ]


def _status_or_none(raw: str | None) -> TaskStatus | None:
    try:
        return TaskStatus(raw) if raw else None
    except ValueError:
        return None


async def dependency_results(conn: Conn, task: Task) -> dict[str, Any]:
    """{id: result} of the task's dependencies (SPEC section 11: ctx.dependency_results), in
    one round trip; a result that is gone (purged) or does not decode is None."""
    k = conn.queue(task.queue)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in task.depends_on:
            pipe.hget(k.task(task_id), codec.F_RESULT)
        replies = cast("list[str | None]", await guarded(pipe.execute()))
    results: dict[str, Any] = {}
    for task_id, raw in zip(task.depends_on, replies, strict=True):
        try:
            results[task_id] = codec.loads(raw) if raw else None
        except ValueError:
            results[task_id] = None
    return results


async def get_stats(
    conn: Conn,
    *,
    dead_after_seconds: float,
    queue: str | None = None,
    names: Sequence[str] | None = None,
) -> Stats:
    """Exact counts in one round trip, O(1) each: of one queue (or of `names`), or summed
    over every queue (with each queue's own under `queues`), plus live workers."""
    if names is None:
        names = [queue] if queue else await queues.known(conn)
    alive_since = await conn.server_ms() - int(dead_after_seconds * 1000)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in names:
            _queue_reads(pipe, conn.queue(name))
        pipe.zcount(conn.keys.heartbeats("worker"), alive_since, "+inf")
        replies = await guarded(pipe.execute())
    per_queue = {
        name: _queue_stats(replies[i * QUEUE_READS : (i + 1) * QUEUE_READS], conn.queue(name))
        for i, name in enumerate(names)
    }
    return _total(per_queue, workers=int(replies[-1]))


QUEUE_READS = 14  # replies _queue_reads adds to a pipeline


def _queue_reads(pipe: Any, k: Keys) -> None:
    pipe.hgetall(k.counts)
    for name in [*k.ready_all(Lane.WORK), *k.ready_all(Lane.NOTIFY)]:
        pipe.llen(name)
    pipe.hgetall(k.ready_skips)
    pipe.zcard(k.delayed)
    pipe.hgetall(k.parked_lists)


def _queue_stats(replies: Sequence[Any], k: Keys) -> QueueStats:
    counts = {name: int(value) for name, value in replies[0].items()}
    skips: dict[str, str] = replies[11]
    # Cancelled ids stay in their ready (or parked) list until a claim drops them (cancel.lua).
    lists = [*k.ready_all(Lane.WORK), *k.ready_all(Lane.NOTIFY)]
    depths = [
        int(n) - int(skips.get(name, 0)) for n, name in zip(replies[1:11], lists, strict=True)
    ]
    by_priority = {
        str(p): w + n for p, w, n in zip(PRIORITIES, depths[:5], depths[5:], strict=True)
    }
    notify = sum(depths[5:])
    parked: dict[str, int] = {}
    for member, n in replies[13].items():
        lane, priority, task_type = member.split(":", 2)
        depth = int(n) - int(skips.get(k.parked(lane, priority, task_type), 0))
        by_priority[priority] = by_priority.get(priority, 0) + depth
        parked[task_type] = parked.get(task_type, 0) + depth
        if lane == Lane.NOTIFY:
            notify += depth
    return QueueStats(
        total_tasks=counts.get("total", 0),
        **{f"{status.value}_count": counts.get(status.value, 0) for status in TaskStatus},
        queue_depth_by_priority=by_priority,
        ready_count=sum(depths) + sum(parked.values()),
        delayed_count=int(replies[12]),
        notifier_queue_depth=notify,
        parked_by_type={name: n for name, n in sorted(parked.items()) if n > 0},
    )


def _total(per_queue: dict[str, QueueStats], *, workers: int) -> Stats:
    keyed = ("queue_depth_by_priority", "parked_by_type")
    fields = {name: 0 for name in QueueStats.model_fields if name not in keyed}
    depth = {str(p): 0 for p in PRIORITIES}
    parked: dict[str, int] = {}
    for one in per_queue.values():
        for name in fields:
            fields[name] += getattr(one, name)
        for p, n in one.queue_depth_by_priority.items():
            depth[p] += n
        for task_type, n in one.parked_by_type.items():
            parked[task_type] = parked.get(task_type, 0) + n
    return Stats(
        **fields,
        queue_depth_by_priority=depth,
        parked_by_type=dict(sorted(parked.items())),
        worker_count=workers,
        queues=per_queue,
    )


async def expired_leases(conn: Conn, limit: int = 500, *, queue: str | None = None) -> list[str]:
    """Processing tasks of a queue whose lease deadline has passed (their consumer stopped
    renewing)."""
    now = await conn.server_ms()  # deadlines are the server's clock (see Conn.server_ms)
    page = conn.redis.zrangebyscore(conn.queue(queue).leases, "-inf", now, start=0, num=limit)
    return cast("list[str]", await guarded(page))


async def cancels_requested(
    conn: Conn, task_ids: Sequence[str], *, queue: str | None = None
) -> list[str]:
    """Those of `task_ids` (of one queue) whose cancel was requested while they ran (SPEC
    section 10): a consumer whose control subscription dropped reads what it may have missed.
    One round trip."""
    if not task_ids:
        return []
    k = conn.queue(queue)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hget(k.task(task_id), codec.F_CANCEL_REQUESTED)
        replies = await guarded(pipe.execute())
    return [task_id for task_id, flag in zip(task_ids, replies, strict=True) if flag == "1"]


async def traceparent(conn: Conn, task_id: str, *, queue: str | None = None) -> str | None:
    """The W3C traceparent a task was created with (SPEC section 13), or None; read only by
    a notifier that traces, for a completion webhook's `notify` span."""
    read = conn.redis.hget(conn.queue(queue).task(task_id), codec.F_TRACEPARENT)
    return cast("str | None", await guarded(read))
