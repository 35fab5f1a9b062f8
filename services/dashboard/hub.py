"""The live hub: one task_events subscription, a little state, compact updates to every page.

Events are never forwarded one by one. The hub notes which tasks changed, and every TICK it
reads stats, every queue's view, throughput, workers and the newest changed rows (a handful
of pipelined round trips, whatever the load) and sends the same few-kilobyte message to
every open page. A page that cannot keep up loses its backlog and gets a full snapshot
instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from shared import codec, heartbeats, monitoring, queries, queue_views, sse
from shared.errors import RedisUnavailable
from shared.events import task_events
from shared.redis import Conn
from shared.runtime import instance_id
from shared.settings import Settings

logger = logging.getLogger(__name__)

SERVICE = "dashboard"
TICK_SECONDS = 0.5  # updates per page: 2 per second at most
TAIL_SECONDS = 10  # throughput seconds repeated in each update (covers a missed message)
WINDOW_SECONDS = 15 * 60  # throughput history a page gets when it connects
MAX_ROWS = 40  # changed task rows per update; pages re-read their list when more changed
MAX_TRACKED = 10_000  # changed ids remembered between two ticks
WORKER_TASKS_SHOWN = 8
CLIENT_BACKLOG = 6
RESYNC = b"resync"


def frame(event: str, body: dict[str, Any]) -> bytes:
    """One Server-Sent Events frame, encoded once for every page that gets it."""
    return sse.event(event, codec.dumps(body))


class Client:
    """One open page: a short queue of frames to send."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=CLIENT_BACKLOG)

    def offer(self, data: bytes | None) -> None:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            # A page too slow to read: drop what it missed, send it a full snapshot next.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC if data is not None else None)


class Hub:
    def __init__(self, conn: Conn, settings: Settings, tick_seconds: float = TICK_SECONDS) -> None:
        self.conn, self.settings, self.tick_seconds = conn, settings, tick_seconds
        self.changed: OrderedDict[str, None] = OrderedDict()
        self.clients: set[Client] = set()
        self.events = task_events(conn)
        self.events.add(self._note)
        self.subscribed = self.events.subscribed
        self.events_seen = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.redis_ok = True
        self.instance_id = instance_id(SERVICE)
        self._rate = 0.0
        self._rate_mark = (time.monotonic(), 0)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen, tick and beat until `stop` is set; then close every stream."""
        self.events.start()
        jobs = [
            asyncio.create_task(self._loop(stop, self.tick_seconds, self._tick)),
            asyncio.create_task(self._loop(stop, self.settings.heartbeat_seconds, self._beat)),
        ]
        try:
            await stop.wait()
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            self.events.remove(self._note)  # closing pages need no resync
            await self.events.aclose()
            for client in list(self.clients):
                client.offer(None)
            with contextlib.suppress(Exception):
                await heartbeats.leave(self.conn, SERVICE, self.instance_id)

    async def _loop(
        self, stop: asyncio.Event, seconds: float, step: Callable[[], Awaitable[None]]
    ) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, seconds - (time.monotonic() - started))
                )

    def _note(self, raw: str | None) -> None:
        if raw is None:  # the subscription was lost or renewed: events were missed
            self.changed.clear()  # pages re-read their lists
            for client in list(self.clients):
                client.offer(RESYNC)
            return
        try:
            task_id = str(codec.loads(raw)["task_id"])
        except (ValueError, KeyError, TypeError):
            return
        self.events_seen += 1
        self.changed.pop(task_id, None)
        self.changed[task_id] = None
        if len(self.changed) > MAX_TRACKED:
            self.changed.popitem(last=False)

    def _take_changed(self) -> tuple[list[str], int]:
        """The newest changed ids (newest first, at most MAX_ROWS) and how many changed."""
        total = len(self.changed)
        newest: list[str] = []
        while self.changed and len(newest) < MAX_ROWS:
            newest.append(self.changed.popitem(last=True)[0])
        self.changed.clear()
        return newest, total

    def _events_rate(self) -> float:
        now, (then, seen) = time.monotonic(), self._rate_mark
        if now - then >= 0.25:
            self._rate = (self.events_seen - seen) / (now - then)
            self._rate_mark = (now, self.events_seen)
        return round(self._rate, 1)

    async def snapshot(self, *, full: bool) -> dict[str, Any]:
        """Everything a page shows: counts, depth, queues, services, workers, throughput and
        changed rows."""
        settings, conn = self.settings, self.conn
        now = codec.now_ms()
        until = now // 1000 - 1  # the current second is still filling
        since = until - (WINDOW_SECONDS if full else TAIL_SECONDS) + 1
        ids, changed = ([], 0) if full else self._take_changed()
        stats, views, services, workers, notifiers, points = await asyncio.gather(
            queries.get_stats(conn, dead_after_seconds=settings.dead_after_seconds),
            queue_views.views(conn, dead_after_seconds=settings.dead_after_seconds),
            heartbeats.live_counts(conn, settings.dead_after_seconds),
            heartbeats.instances(conn, "worker", settings.dead_after_seconds),
            heartbeats.instances(conn, "notifier", settings.dead_after_seconds),
            monitoring.throughput(conn, since, until),
        )
        running = [
            tid
            for info in (*workers, *notifiers)
            for tid in list(info.get("tasks") or [])[:WORKER_TASKS_SHOWN]
        ]
        wanted = list(dict.fromkeys([*ids, *running]))
        rows = {row["id"]: row for row in await monitoring.task_rows(conn, wanted)}
        return {
            "kind": "snapshot" if full else "update",
            "t": now,
            "tick_ms": int(self.tick_seconds * 1000),
            "queue": settings.queue_name,
            "counts": {**stats.by_status(), "total": stats.total_tasks},
            "depth": stats.queue_depth_by_priority,
            "delayed": stats.delayed_count,
            "notify_depth": stats.notifier_queue_depth,
            "queues": [queue_row(view) for view in views],
            "services": services,
            "workers": [
                _instance(info, service, now, rows)
                for service, group in (("worker", workers), ("notifier", notifiers))
                for info in group
            ],
            "tp": {"from": since, "to": until, "points": points},
            "tasks": [rows[tid] for tid in ids if tid in rows],
            "changed": changed,
            "events_per_s": self._events_rate(),
        }

    async def _tick(self) -> None:
        if not self.clients:
            self.changed.clear()
            return
        try:
            data = frame("update", await self.snapshot(full=False))
            if not self.redis_ok:
                logger.info("redis is back")
            self.redis_ok = True
        except (RedisUnavailable, RedisError, OSError) as exc:
            if self.redis_ok:
                logger.warning("cannot read redis: %s", exc)
            self.redis_ok = False
            data = frame("trouble", {"error": f"redis unavailable: {exc}"})
        for client in list(self.clients):
            client.offer(data)
        self.frames_sent += len(self.clients)
        self.bytes_sent += len(data) * len(self.clients)

    async def _beat(self) -> None:
        info = {
            "name": f"Dashboard {socket.gethostname()}",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "clients": len(self.clients),
            "events_seen": self.events_seen,
        }
        try:
            await heartbeats.beat(
                self.conn, SERVICE, self.instance_id, info, self.settings.heartbeat_seconds * 5
            )
        except (RedisUnavailable, RedisError, OSError) as exc:
            logger.debug("heartbeat failed: %s", exc)


def queue_row(view: queue_views.QueueView) -> dict[str, Any]:
    """What the queues panel shows of one queue (the page's compact shape, as task rows are)."""
    rate = view.rate_limit
    return {
        "name": view.name,
        "paused": view.paused,
        "rate_limit": {"tasks": rate.tasks, "per_seconds": rate.per_seconds} if rate else None,
        "max_concurrency": view.max_concurrency,
        "ready": view.ready_count,
        "pending": view.pending_count,
        "processing": view.processing_count,
        "delayed": view.delayed_count,
        "failed": view.failed_count,
        "total": view.total_tasks,
        "workers": view.workers,
        "unhandled": view.unhandled_by_type,
    }


def _instance(
    info: dict[str, Any], service: str, now: int, rows: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    tasks = list(info.get("tasks") or [])
    return {
        "id": info["instance_id"],
        "service": service,
        "name": info.get("name") or info["instance_id"],
        "host": info.get("host"),
        "pid": info.get("pid"),
        "running": int(info.get("running") or 0),
        "slots": info.get("slots"),
        "processed": int(info.get("processed") or 0),
        "age_ms": max(0, now - int(info["last_beat_ms"])),
        "started_at": info.get("started_at"),
        "tasks": [
            {"id": tid, "type": rows[tid]["type"] if tid in rows else None}
            for tid in tasks[:WORKER_TASKS_SHOWN]
        ],
    }
