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
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from pydantic import ValidationError
from redis.asyncio.client import PubSub

from shared import codec, queries, registry, transitions
from shared.errors import ValidationFailed
from shared.keys import EVENTS_CHANNEL
from shared.models import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    FINAL_STATUSES,
    Task,
    TaskCreate,
)
from shared.redis import Conn, create_redis, guarded
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)
_FINAL = frozenset(str(status) for status in FINAL_STATUSES)

CreateLike = TaskCreate | Mapping[str, Any]
MAX_COALESCED = 1000  # concurrent enqueue() calls sent in one script call, at most


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
        self._queued: list[tuple[TaskCreate, asyncio.Future[Task]]] = []
        self._sending = False
        self._senders: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None

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
        registry.load_task_modules(self.settings)
        await self.conn.load_scripts()
        return self

    async def aclose(self) -> None:
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
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
    ) -> Task:
        """Create one task (as `POST /api/tasks`); returns it as stored, status included.

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
            }
        )
        if idempotency_key is not None:
            tasks, _ = await transitions.enqueue(
                self.conn, [create], self.settings, idempotency_key=idempotency_key
            )
            return tasks[0]
        return await self.submit(create)

    async def submit(self, create: TaskCreate) -> Task:
        """Create one task from a TaskCreate (as `enqueue`; the REST gateway's entry point).

        With nothing in flight the task goes out alone, in one round trip. Calls made while
        another is in flight are queued and all go out together in the next script call.
        """
        if not self._sending:
            self._sending = True
            try:
                tasks, _ = await transitions.enqueue(self.conn, [create], self.settings)
            finally:
                self._sending = False
                self._send_queued()
            return tasks[0]
        transitions.build_spec(create, self.settings)  # validate now: a bad task fails alone
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._queued.append((create, future))
        return await future

    def _send_queued(self) -> None:
        if self._queued and not self._sending:
            batch, self._queued = self._queued[:MAX_COALESCED], self._queued[MAX_COALESCED:]
            self._sending = True
            sender = asyncio.create_task(self._send(batch))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[tuple[TaskCreate, asyncio.Future[Task]]]) -> None:
        try:
            tasks, _ = await transitions.enqueue(
                self.conn, [create for create, _ in batch], self.settings
            )
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), task in zip(batch, tasks, strict=True):
                if not future.done():
                    future.set_result(task)
        finally:
            self._sending = False
            self._send_queued()

    async def enqueue_many(
        self, items: Iterable[CreateLike], *, idempotency_key: str | None = None
    ) -> list[Task]:
        """Create many tasks in one atomic script call: all are created, or none is.

        Each item is a TaskCreate or a dict shaped like the REST create body. The REST batch
        route caps a batch at 1000; here the caller decides (one call holds Redis for its
        duration, about 10 ms per 1000 tasks).
        """
        creates = [_to_create(item) for item in items]
        if not creates:
            return []
        tasks, _ = await transitions.enqueue(
            self.conn, creates, self.settings, idempotency_key=idempotency_key
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
            while True:
                await self._ensure_listener()
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

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.done():
            assert self._subscribed is not None
            await asyncio.shield(self._subscribed)
            return
        self._subscribed = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(self._subscribed))
        await asyncio.shield(self._subscribed)

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        """One subscription to task_events wakes every waiter whose task reached an end."""
        pubsub: PubSub = self.conn.redis.pubsub()
        try:
            await guarded(pubsub.subscribe(EVENTS_CHANNEL))
            async for message in pubsub.listen():
                kind = message.get("type")
                if kind == "subscribe" and not subscribed.done():
                    subscribed.set_result(None)
                elif kind == "message" and self._waiters:
                    self._dispatch(message["data"])
        except Exception as exc:
            if not subscribed.done():
                subscribed.set_exception(exc)
            # Wake every waiter: each re-reads its task, then waits on a fresh subscription.
            logger.warning("task_events subscription lost (%s)", exc)
            for futures in self._waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_result(None)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

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
