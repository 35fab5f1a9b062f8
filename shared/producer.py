"""The Python producer API: enqueue, get and wait for tasks without going through HTTP.

It runs the very transition the REST gateway runs (`shared.transitions.enqueue`, one atomic
script per call) and reads through `shared.queries`, so a task created here is
indistinguishable from one created with `POST /api/tasks`::

    from shared.producer import Producer

    async with Producer.from_settings() as producer:        # REDIS_URL, QUEUE_NAME, ...
        task = await producer.enqueue("sum", [1, 2, 3.5], priority=5)
        tasks = await producer.enqueue_many([{"type": "sum", "payload": [n]} for n in range(100)])
        done = await producer.wait(task.id, timeout=30)     # completed, failed or cancelled
        print(done.status, done.result)

Payloads are validated by the task type's `validate` function, so the producer process must
know the types it enqueues: the built-ins always, plugins through TASK_MODULES (or an import).
`wait` listens on the `task_events` channel (one subscription per producer, shared by every
waiter) instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from pydantic import ValidationError

from shared import codec, plugins, queries, queues, tracing, transitions
from shared.errors import ValidationFailed
from shared.events import task_events
from shared.models import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    FINAL_STATUSES,
    Task,
    TaskCreate,
)
from shared.redis import Conn, create_redis
from shared.script_connection import ScriptConnection
from shared.settings import Settings, get_settings
from shared.transitions import NewTask

logger = logging.getLogger(__name__)
_FINAL = frozenset(str(status) for status in FINAL_STATUSES)

CreateLike = TaskCreate | Mapping[str, Any]
MAX_COALESCED = 1000  # concurrent enqueue() calls sent in one script call, at most
SUBSCRIBE_TIMEOUT_SECONDS = 5.0  # longest `wait` waits for Redis to confirm its subscription


def _to_create(item: CreateLike) -> TaskCreate:
    """A TaskCreate from a model or a dict shaped like the REST create body."""
    if isinstance(item, TaskCreate):
        return item
    try:
        return TaskCreate.model_validate(dict(item))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        details = [{"loc": list(error["loc"]), "msg": error["msg"]} for error in errors]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        raise ValidationFailed(f"invalid task: {message}", details) from None


class Producer:
    """Creates and watches tasks through Redis. Use `async with`, or `start()` / `aclose()`."""

    def __init__(self, conn: Conn, settings: Settings, *, owns_conn: bool = False) -> None:
        self.conn, self.settings = conn, settings
        self._owns_conn = owns_conn
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._queued: list[tuple[NewTask, asyncio.Future[Task]]] = []
        # Single creates and coalesced batches go out on a connection of their own (only one
        # is in flight at a time); everything else uses `conn`.
        # (On Sentinel and Cluster the client's own path: it follows failovers and slots.)
        self._direct = ScriptConnection.for_conn(conn)
        self._lane: transitions.ScriptRunner = (
            conn.scripts["enqueue"] if self._direct is None else self._direct.runner("enqueue")
        )
        self._sending = False
        self._senders: set[asyncio.Task[None]] = set()
        # One subscription to task events wakes every waiter (see `wait`).
        self._events = task_events(conn)
        self._listening = False
        self._opening = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        """A producer with its own Redis client, built from the settings (env by default)."""
        settings = settings or get_settings()
        # One connection for commands: enqueues go out one script call at a time (concurrent
        # calls are coalesced, see `enqueue`), so a pool would only add its per-call cost.
        conn = create_redis(settings, single_connection_client=True)
        return cls(conn, settings, owns_conn=True)

    async def start(self) -> Self:
        """Load the task types (built-ins and TASK_MODULES) and the scripts."""
        plugins.load_task_modules(self.settings)
        await self.conn.load_scripts()
        return self

    async def aclose(self) -> None:
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        if self._direct is not None:
            await self._direct.aclose()
        if self._listening:
            self._events.close(self._on_event)
            await self._events.aclose()
            self._listening = False
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()
        if self._owns_conn:
            await self.conn.aclose()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- creating -------------------------------------------------------------------------

    async def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        scheduled_for: datetime | None = None,
        webhook: str | None = None,
        timeout_seconds: float | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        depends_on: Sequence[str] | None = None,
        traceparent: str | None = None,
    ) -> Task:
        """Create one task (as `POST /api/tasks`); returns it as stored, status included.

        `traceparent` (W3C; default: the current OpenTelemetry span's, if any) is kept with
        the task, so the worker's spans join that trace (SPEC section 13).

        `depends_on` names tasks of the same queue: the task waits until all completed
        (SPEC section 11); a whole graph at once is `enqueue_many` with refs.

        With an `idempotency_key` seen in the last 24 h, the original task is returned and
        nothing is created (as the REST `Idempotency-Key` header).

        Calls made while another is in flight (many coroutines sharing one producer) are
        coalesced into one atomic script call: one round trip for the lot instead of one
        each. Each call is validated on its own first, so an invalid task fails alone.
        """
        create = _to_create(
            {
                "type": type,
                "payload": payload,
                "priority": priority,
                "max_retries": max_retries,
                "scheduled_for": scheduled_for,
                "webhook": webhook,
                "timeout_seconds": timeout_seconds,
                "queue": queue,
                "unique_key": unique_key,
                "depends_on": None if depends_on is None else list(depends_on),
            }
        )
        traceparent = traceparent or tracing.current_traceparent()
        if idempotency_key is not None:
            tasks, _ = await transitions.enqueue(
                self.conn,
                [create],
                self.settings,
                idempotency_key=idempotency_key,
                traceparent=traceparent,
                batch=False,
            )
            return tasks[0]
        return await self.submit(create, traceparent=traceparent)

    async def submit(self, create: TaskCreate, *, traceparent: str | None = None) -> Task:
        """Create one task from a TaskCreate (as `enqueue`; the REST gateway's entry point),
        with the create's W3C `traceparent`, if any.

        With nothing in flight the task goes out alone, in one round trip. Calls made while
        another is in flight are queued and all go out together in the next script call.
        """
        # A bad task fails alone, here.
        task = transitions.prepare(create, self.settings, traceparent=traceparent)
        if self._sending:
            future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
            self._queued.append((task, future))
            return await future
        self._sending = True
        try:
            created, _ = await transitions.enqueue_prepared(self.conn, [task], run=self._lane)
        finally:
            self._sending = False
            if self._queued:
                self._send_queued()
        return created[0]

    def _send_queued(self) -> None:
        if self._queued and not self._sending:
            # One script call writes one queue: send the first waiting call's queue now, the
            # others' in the calls that follow.
            queue = self._queued[0][0].spec["queue"]
            batch: list[tuple[NewTask, asyncio.Future[Task]]] = []
            rest: list[tuple[NewTask, asyncio.Future[Task]]] = []
            for item in self._queued:
                fits = (
                    item[0].spec["queue"] == queue
                    and len(batch) < MAX_COALESCED
                    # A batch is all or nothing: a unique task's 409 must be its own alone.
                    and not (batch and (_alone(item[0]) or _alone(batch[0][0])))
                )
                (batch if fits else rest).append(item)
            self._queued = rest
            self._sending = True
            sender = asyncio.create_task(self._send(batch))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[tuple[NewTask, asyncio.Future[Task]]]) -> None:
        try:
            created, _ = await transitions.enqueue_prepared(
                self.conn, [task for task, _ in batch], run=self._lane
            )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), task in zip(batch, created, strict=True):
                if not future.done():
                    future.set_result(task)
        finally:
            self._sending = False
            self._send_queued()

    async def enqueue_many(
        self,
        items: Iterable[CreateLike],
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
    ) -> list[Task]:
        """Create many tasks in one atomic script call: all are created, or none is.

        Each item is a TaskCreate or a dict shaped like the REST create body; an item may
        carry a `ref` that later items name in their `depends_on` (SPEC section 11), so a
        whole graph is created at once. The REST batch
        route caps a batch at 1000; here the caller decides (one call holds Redis for its
        duration, about 10 ms per 1000 tasks).
        """
        creates = [_to_create(item) for item in items]
        if not creates:
            return []
        tasks, _ = await transitions.enqueue(
            self.conn,
            creates,
            self.settings,
            idempotency_key=idempotency_key,
            traceparent=traceparent or tracing.current_traceparent(),
        )
        return tasks

    # -- reading --------------------------------------------------------------------------

    async def get(self, task_id: str) -> Task:
        """The task as stored now; raises TaskNotFound."""
        return await queries.get_task(self.conn, task_id)

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """Wait until the task is completed, failed or cancelled, and return it.

        Raises TimeoutError after `timeout` seconds (None waits for ever) and TaskNotFound
        for an unknown id. A failed task is returned, not raised: look at `status`/`error`.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            queue = None
            if self.conn.events_mode == "sharded":  # the task's queue has its own channel
                queue = (await queues.locate(self.conn, task_id)).queue
            while True:
                await self._ensure_listener(queue)
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(task_id, []).append(future)
                try:
                    # Subscribed before this read, so a final event after it is never missed.
                    task = await self.get(task_id)
                    if task.status in FINAL_STATUSES:
                        return task
                    await future
                finally:
                    self._forget(task_id, future)

    def _forget(self, task_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(task_id)
        if futures is None:
            return
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            del self._waiters[task_id]

    async def _ensure_listener(self, queue: str | None) -> None:
        """Return once the subscription (to `queue`'s events) is live, so a final event after
        the caller's next read is never missed."""
        async with self._opening:
            if not self._listening:
                await self._events.open(self._on_event, SUBSCRIBE_TIMEOUT_SECONDS, queue)
                self._listening = True
                return
        await self._events.ready(queue)  # renewed after a drop (bounded by wait's timeout)

    def _on_event(self, raw: str | None) -> None:
        if raw is None:
            # The subscription was lost or renewed and events may be missing: every waiter
            # re-reads its task once the subscription is back.
            for futures in self._waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_result(None)
        elif self._waiters:
            self._dispatch(raw)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            event = codec.loads(raw)
            task_id, status = event["task_id"], event.get("status")
        except (ValueError, KeyError, TypeError):
            return
        if status in _FINAL:
            for future in self._waiters.get(task_id, ()):
                if not future.done():
                    future.set_result(None)


def _alone(task: NewTask) -> bool:
    """Whether a create goes out in a script call of its own: one with a unique_key or with
    dependencies, so that its conflict (409) or unknown dependency (404) refuses it alone,
    not the calls coalesced with it."""
    return "unique_key" in task.spec or "depends_on" in task.spec
