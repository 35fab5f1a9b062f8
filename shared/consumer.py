"""The consumer loop that workers (lane "work") and the notifier (lane "notify") share.

Claim up to the free slots in one script call, run each task with its timeout, report
outcomes in pipelined batches, keep leases alive with the heartbeat, and on SIGTERM hand back
what is still running. Round trips per task under load: one claim shared by the batch, one
pipelined outcome shared by the batch, nothing per task while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shared import codec, heartbeats, transitions
from shared.redis import Conn
from shared.registry import Handler, TaskContext
from shared.settings import Settings
from shared.transitions import Claimed, Outcome

logger = logging.getLogger(__name__)
HandlerLookup = Callable[[str], Handler | None]
CLAIM_GATHER_SECONDS = 0.002  # longest a free slot waits for others before a claim


MAX_RESULT_BYTES = 1024 * 1024  # a larger result fails the task instead of bloating Redis


class TaskTimeout(Exception):
    pass


async def execute(handler: Handler, ctx: TaskContext, timeout: float) -> Any:
    """Run one handler: async in the loop, plain functions in a thread; bounded by timeout."""
    if asyncio.iscoroutinefunction(handler):
        call = handler(ctx.task.payload, ctx)
    else:
        call = _in_thread(handler, ctx.task.payload, ctx)
    result = await _bounded(_contained(call), timeout)
    if asyncio.iscoroutine(result):
        result = await _bounded(_contained(result), timeout)
    try:
        encoded = codec.dumps(result)  # refuse what cannot be stored, as the task's error
    except TypeError as exc:
        raise TypeError(f"result is not JSON-serialisable: {exc}") from exc
    if len(encoded) > MAX_RESULT_BYTES:
        raise ValueError(f"result is {len(encoded)} bytes as JSON; the limit is {MAX_RESULT_BYTES}")
    return result


class HandlerAborted(Exception):
    """A handler raised SystemExit or KeyboardInterrupt, which asyncio would let end the loop."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe(cause))
        self.cause = cause


async def _contained(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerAborted(exc) from exc


async def _bounded(call: Awaitable[Any], timeout: float) -> Any:
    """Await `call` for at most `timeout` seconds. Unlike wait_for, a handler that swallows its
    cancellation is abandoned rather than awaited, so it cannot hold its slot forever."""
    job = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({job}, timeout=timeout)
    finally:
        if not job.done():
            job.cancel()
            job.add_done_callback(_consume)
    if not done:
        raise TaskTimeout(f"timed out after {timeout:g}s")
    return job.result()


def _consume(job: asyncio.Future[Any]) -> None:
    if not job.cancelled():
        job.exception()  # an abandoned handler's late error is of no use to anyone


async def _in_thread(handler: Handler, payload: Any, ctx: TaskContext) -> Any:
    """Run a plain handler in its own daemon thread: one that hangs past its timeout is
    abandoned without taking a pool slot from later tasks or blocking the process's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(error: BaseException | None, value: Any) -> None:
        if done.done():
            return  # timed out meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)

    def work() -> None:
        try:
            value, error = handler(payload, ctx), None
        except BaseException as exc:  # SystemExit too: it must not end this thread silently
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while this thread hung
            loop.call_soon_threadsafe(settle, error, value)

    threading.Thread(target=work, name=f"task-{ctx.task.id}", daemon=True).start()
    return await done


def describe(exc: BaseException) -> str:
    """`Type: message` for a task's error; never raises, whatever the exception's __str__ does."""
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable message>"
    name = type(exc).__name__
    return f"{name}: {text}" if text and not isinstance(exc, TaskTimeout) else (text or name)


class Consumer:
    """Runs tasks of one lane with `concurrency` slots until stopped."""

    def __init__(
        self,
        conn: Conn,
        settings: Settings,
        *,
        service: str,
        lane: str,
        name: str,
        concurrency: int,
        lookup: HandlerLookup,
    ) -> None:
        self.conn, self.settings, self.service, self.lane = conn, settings, service, lane
        self.name, self.concurrency, self.lookup = name, concurrency, lookup
        from shared.runtime import instance_id

        self.instance_id = instance_id(service)
        self.held: dict[str, Claimed] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.outcomes: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self.finished: set[str] = set()
        self.slot_free = asyncio.Event()
        # Claim in batches when busy: wait for this many free slots (or CLAIM_GATHER_SECONDS)
        # instead of one claim round trip per finished task.
        self.claim_batch = max(1, concurrency // 4)
        self.started = time.time()
        self.processed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain within SHUTDOWN_GRACE and hand back the rest."""
        # Beat before the first claim, so a crash right after it is recovered by heartbeat.
        await self._beat()
        beat = asyncio.create_task(self._heartbeat_loop(stop))
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: self.slot_free.set())  # wakes a busy claim loop
        flusher = asyncio.create_task(self._flush_loop())
        logger.info(
            "%s started (%s, %d slots, lane %s)",
            self.name,
            self.instance_id,
            self.concurrency,
            self.lane,
        )
        try:
            await self._claim_loop(stop)
        finally:
            await self._drain()
            self.outcomes.put_nowait(None)  # the flusher reports what is queued, then returns
            try:
                await asyncio.wait_for(
                    flusher, timeout=max(self.settings.shutdown_grace_seconds, 1)
                )
            except (TimeoutError, asyncio.CancelledError):
                logger.error("%s stopped before every outcome was reported", self.name)
            beat.cancel()
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            with contextlib.suppress(Exception):
                await heartbeats.leave(self.conn, self.service, self.instance_id)
            logger.info("%s stopped after %d tasks", self.name, self.processed)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        wake_key = self.conn.keys.wake(self.lane)
        pause = 0.0
        while not stop.is_set():
            free = self.concurrency - len(self.running)
            if free < self.claim_batch and self.running:
                # Busy: gather finished slots into one claim. A free slot waits at most
                # CLAIM_GATHER_SECONDS, so long tasks do not leave it idle for long.
                self.slot_free.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLAIM_GATHER_SECONDS if free > 0 else None):
                        await self.slot_free.wait()
                continue
            try:
                claimed = await transitions.claim(
                    self.conn,
                    self.lane,
                    free,
                    worker=self.name,
                    owner=self.instance_id,
                    lease_seconds=self.settings.task_lease_seconds,
                )
                if not claimed:
                    # Sleep until an enqueue leaves a wake token (or 1 s passes, as a safety net).
                    await _first_of(self.conn.redis.blpop([wake_key], timeout=1), stop.wait())
                pause = 0.0
            except Exception as exc:
                pause = min(max(pause * 2, 0.1), 2.0)
                logger.warning(
                    "%s cannot claim (%s); retrying in %.1fs", self.name, describe(exc), pause
                )
                await _first_of(asyncio.sleep(pause), stop.wait())
                continue
            for item in claimed:
                self.held[item.task.id] = item
                self.running[item.task.id] = asyncio.create_task(self._run_one(item))

    async def _run_one(self, item: Claimed) -> None:
        task = item.task
        logger.info("%s received task %s", self.name, task.id, extra={"task_id": task.id})
        logger.info(
            "%s processing task %s (type: %s, attempt %d)",
            self.name,
            task.id,
            task.type,
            item.attempt,
            extra={"task_id": task.id},
        )
        if item.poison is not None:
            logger.error("%s cannot run task %s: %s", self.name, task.id, item.poison)
            outcome = Outcome(task.id, item.attempt, False, error=item.poison, final=True)
        else:
            outcome = await self._outcome_of(item)
        self.running.pop(task.id, None)
        self.finished.add(task.id)
        if self.concurrency - len(self.running) >= self.claim_batch or not self.running:
            self.slot_free.set()
        self.outcomes.put_nowait(outcome)

    async def _outcome_of(self, item: Claimed) -> Outcome:
        """Run the handler; whatever it raises (bar our own cancellation) is the task's error."""
        task = item.task
        handler = self.lookup(task.type)
        timeout = task.timeout_seconds or self.settings.default_timeout_seconds
        try:
            if handler is None:
                raise LookupError(f"no handler for task type {task.type!r} in {self.service}")
            ctx = TaskContext(task=task, attempt=item.attempt, settings=self.settings)
            result = await execute(handler, ctx, timeout)
            return Outcome(task.id, item.attempt, True, result=result)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # shutdown: _drain hands the task back
            return Outcome(task.id, item.attempt, False, error=describe(exc) or "cancelled")
        except HandlerAborted as exc:
            return Outcome(task.id, item.attempt, False, error=describe(exc.cause))
        except BaseException as exc:  # GeneratorExit, MemoryError, ...: the handler's doing
            return Outcome(task.id, item.attempt, False, error=describe(exc))

    async def _flush_loop(self) -> None:
        """Report outcomes as they come, batching whatever queued up during the last report."""
        while True:
            first = await self.outcomes.get()
            batch: list[Outcome] = []
            last = first is None
            if first is not None:
                batch.append(first)
            while not last and not self.outcomes.empty() and len(batch) < 500:
                item = self.outcomes.get_nowait()
                last = item is None
                if item is not None:
                    batch.append(item)
            if batch:
                await self._report(batch)
            if last:
                return

    async def _report(self, batch: list[Outcome]) -> None:
        """Report a batch, retrying while Redis is away (the leases keep the tasks safe)."""
        tries = 0
        while True:
            try:
                codes = await transitions.report_outcomes(self.conn, batch, self.settings)
                break
            except Exception as exc:
                tries += 1
                logger.warning("%s cannot report outcomes (%s); retrying", self.name, describe(exc))
                await asyncio.sleep(min(0.1 * 2**tries, 2.0))
        for outcome, code in zip(batch, codes, strict=True):
            self.held.pop(outcome.task_id, None)
            self.finished.discard(outcome.task_id)
            self.processed += 1
            self._log_outcome(outcome, code)

    def _log_outcome(self, outcome: Outcome, code: str) -> None:
        extra = {"task_id": outcome.task_id}
        if code == "ok":
            logger.info("%s completed task %s", self.name, outcome.task_id, extra=extra)
        elif code.startswith("error"):
            logger.error(
                "%s outcome of task %s not recorded (%s); its lease will expire and recover it",
                self.name,
                outcome.task_id,
                code,
                extra=extra,
            )
        elif code in ("retrying", "failed"):
            logger.info(
                "%s task %s %s: %s", self.name, outcome.task_id, code, outcome.error, extra=extra
            )
        else:
            logger.warning(
                "%s outcome of task %s dropped (%s): its lease was taken back",
                self.name,
                outcome.task_id,
                code,
                extra=extra,
            )

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            await self._beat()

    async def _beat(self) -> None:
        """Say we are alive and what we hold, then renew the leases of everything held."""
        info = {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "lane": self.lane,
            "slots": self.concurrency,
            "running": len(self.running),
            "tasks": list(self.running)[:20],
            "processed": self.processed,
            "started_at": self.started,
        }
        ttl = self.settings.heartbeat_seconds * 5
        try:
            await heartbeats.beat(self.conn, self.service, self.instance_id, info, ttl)
            await transitions.extend_leases(
                self.conn, list(self.held), self.settings.task_lease_seconds
            )
        except Exception as exc:
            logger.warning("%s heartbeat failed: %s", self.name, describe(exc))

    async def _drain(self) -> None:
        if self.running:
            logger.info("%s draining %d running tasks", self.name, len(self.running))
            _, still = await asyncio.wait(
                list(self.running.values()), timeout=self.settings.shutdown_grace_seconds
            )
            for job in still:
                job.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        for task_id, item in list(self.held.items()):
            if task_id in self.finished:
                continue  # its outcome is queued; the flusher reports it
            with contextlib.suppress(Exception):
                await transitions.requeue(
                    self.conn, task_id, item.attempt, f"{self.name} shut down"
                )
                logger.info(
                    "%s handed back task %s", self.name, task_id, extra={"task_id": task_id}
                )
            self.held.pop(task_id, None)


async def _first_of(*aws: Any) -> None:
    """Wait until the first awaitable finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # consume
        await asyncio.gather(*tasks, return_exceptions=True)
