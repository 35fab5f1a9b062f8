"""The consumer loop that workers (lane "work") and the notifier (lane "notify") share.

Claim up to the free slots in one script call, run each task with its timeout, report
outcomes in pipelined batches, keep leases alive with the heartbeat, and on SIGTERM hand back
what is still running. Round trips per task under load: one claim shared by the batch, one
pipelined outcome shared by the batch, nothing per task while it runs.

When the queue runs dry, the claim offers the slots it could not fill: the next enqueue (or
promotion, or retry) claims the task for this consumer inside its own script and pushes the
record to this consumer's inbox, which `_inbox_loop` BLPOPs. A task then reaches an idle
consumer in one round trip, as a BRPOP-based queue's message does, with the lease, held set
and attempt booked like any claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, cast

from shared import codec, heartbeats, liveness, queries, queues, registry, tracing, transitions
from shared.errors import RedisUnavailable
from shared.events import Fanout
from shared.keys import QUEUE_CONTROL_CHANNEL, Lane
from shared.logging import log_step
from shared.queue_selection import QueueSelection
from shared.redis import Conn, guarded
from shared.registry import Handler, Permanent, TaskContext
from shared.running import Run
from shared.runtime import end_within, instance_id, wait_or_stop
from shared.script_connection import ScriptConnection
from shared.settings import Settings
from shared.transitions import Claimed, Outcome

logger = logging.getLogger(__name__)
HandlerLookup = Callable[[str], Handler | None]
ClaimKey = tuple[str, str]  # (task id, claim token): one run of a task (Claimed.key)
CLAIM_GATHER_SECONDS = 0.002  # longest a free slot waits for others before a claim
INBOX_WAIT_SECONDS = 1.0  # an inbox silent this long re-syncs the offers (a safety net)
MAX_REPORT_BATCH = 500  # outcomes reported in one call at most (by the flusher or with a claim)
# The longest a consumer waits for a promoted task's due time (_lib.lua's MAX_EARLY_MS).
MAX_EARLY_SECONDS = 1.0
SERVED_REFRESH_SECONDS = 1.0
# The longest pause before a queue whose shard could not be reached is tried again (its
# claims and, on a cluster, its inbox reader): each try at a shard that is down makes
# redis-py re-read the cluster's topology, cutting calls in flight to the healthy shards.
UNREACHABLE_PAUSE_MAX_SECONDS = 5.0
# How long a queue a claim found empty is claimed after the others, in weighted and `*`
# order: draining, most rounds would otherwise start with a round trip for nothing each.
DRY_SECONDS = 0.05  # how often `*` looks for new queues


MAX_RESULT_BYTES = 1024 * 1024  # a larger result fails the task instead of bloating Redis


SHUTDOWN_CALL_SECONDS = 2.0  # the longest one Redis call may hold a shutdown step
ABANDON_AFTER_SECONDS = 1.0  # a timed-out handler that ignores its cancellation keeps its
# slot this long, then the slot is freed and the timeout reported while it runs on
# SPEC section 10: a thread handler whose task is cancelled gets this long to see
# ctx.cancelled and stop; then it is abandoned (it runs on, its outcome ignored) and the task
# ends cancelled, within 2 s of the request.
THREAD_CANCEL_GRACE_SECONDS = 0.8
CANCELLED_ERROR = "cancelled on request while running"
MAX_EARLY_CANCELS = 256


class TaskTimeout(Exception):
    pass


async def call_handler(handler: Handler, ctx: TaskContext) -> Any:
    """Run one handler to its result: async in the current task, plain functions in a thread.
    The caller bounds it in time (Consumer._outcome_of)."""
    if asyncio.iscoroutinefunction(handler):
        result = await handler(ctx.task.payload, ctx)
    else:
        result = await _in_thread(handler, ctx.task.payload, ctx)
    if asyncio.iscoroutine(result):
        result = await result
    return result


def encode_result(result: Any) -> str:
    """The result as stored; what cannot be stored is the task's error, not the worker's.

    Lone surrogates in its strings (say an SMTP reply decoded with `surrogateescape`) are
    stored as U+FFFD: the work was done, and failing it would run it again."""
    try:
        encoded = codec.dumps(result)
    except TypeError as exc:
        if "surrogates" not in str(exc):
            raise TypeError(f"result is not JSON-serialisable: {exc}") from exc
        try:
            encoded = codec.dumps(_without_surrogates(result))
        except (TypeError, RecursionError) as again:
            raise TypeError(f"result is not JSON-serialisable: {again}") from again
    if len(encoded) > MAX_RESULT_BYTES:
        raise ValueError(f"result is {len(encoded)} bytes as JSON; the limit is {MAX_RESULT_BYTES}")
    return encoded


def _without_surrogates(value: Any) -> Any:
    """`value` with codec.safe_text applied to every string in it (keys included)."""
    if isinstance(value, str):
        return codec.safe_text(value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(item) for item in value]
    return value


async def _in_thread(handler: Handler, payload: Any, ctx: TaskContext) -> Any:
    """Run a plain handler in its own daemon thread: one that hangs past its timeout is
    abandoned without taking a pool slot from later tasks or blocking the process's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(error: BaseException | None, value: Any) -> None:
        if done.done():
            return  # timed out meanwhile
        if error is not None:
            done.set_exception(_Carried(error))
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
    try:
        return await done
    except _Carried as carried:
        raise carried.cause from None


class _Carried(Exception):
    """Carries a thread's exception across the future. asyncio throws a future's exception
    into the awaiting task, and a GeneratorExit thrown into a coroutine closes the whole
    await chain instead of reaching our handler; raised here, it is an ordinary exception."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


def describe(exc: BaseException) -> str:
    """`Type: message` for a task's error; never raises, whatever the exception's __str__ does,
    and always encodable (lone surrogates become U+FFFD)."""
    try:
        text = codec.safe_text(str(exc))
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
        lane: Lane,
        name: str,
        concurrency: int,
        lookup: HandlerLookup,
        queues: QueueSelection | None = None,
        types: Collection[str] | None = None,
        on_backlog: Callable[[bool], None] | None = None,
    ) -> None:
        self.conn, self.settings, self.service, self.lane = conn, settings, service, lane
        # Told True when a claim takes tasks and offers no slot (a backlog to drain), False
        # when one offers slots (waiting for hand-overs); the worker's scheduling policy.
        self.on_backlog = on_backlog
        self.name, self.concurrency, self.lookup = name, concurrency, lookup
        # The task types this consumer runs (default: every registered type `lookup` has a
        # handler for, read when it starts). Claims and offers carry them: it never takes a
        # task of another type, which waits for a consumer that runs it (claim.lua parks it).
        self.given_types = types
        self.types = ""
        # Which queues, in what order (WORKER_QUEUES); None: only the default queue.
        self.selection = queues or QueueSelection("strict", (conn.keys.queue,))
        self.served: list[str] = self.selection.served([conn.keys.queue])
        self.served_at = float("-inf")  # when `served` was last read from the registry
        self.reading: list[str] = []  # the queues whose inbox the reader blocks on now
        self.sealed: set[str] = set()  # inboxes whose seal the reader met (shutdown)
        self.paused: set[str] = set()  # served queues paused (woken by a control event)
        self.limited_until: dict[str, float] = {}  # queue -> monotonic time to claim again
        # Queues whose claim failed with Redis unavailable (on a cluster: their shard is
        # failing over or down): queue -> (monotonic time to try again, last pause). The
        # other queues are served meanwhile.
        self.unreachable: dict[str, tuple[float, float]] = {}
        # Queues a claim found with nothing ready: queue -> monotonic time it stops counting.
        self.dry: dict[str, float] = {}
        self.instance_id = instance_id(service)
        # Keyed by claim, not task id: a task wrongly recovered from this live consumer can
        # come back to it while its first run goes on, and each run must settle as its own.
        self.held: dict[ClaimKey, Claimed] = {}
        self.running: dict[ClaimKey, asyncio.Task[None]] = {}
        self.runs: dict[ClaimKey, Run] = {}  # each running claim's cancel flag and progress
        # Cancels of claims not started yet (handed over, still in the inbox), oldest first;
        # bounded, as one for a run that ended meanwhile is never taken.
        self.early_cancels: dict[ClaimKey, None] = {}
        self.controls: Fanout | None = None
        self.cancel_check: asyncio.Task[None] | None = None
        self.cancels_unchecked = False  # a drop came while cancel_check was reading: again
        self.outcomes: asyncio.Queue[tuple[ClaimKey, Outcome] | None] = asyncio.Queue()
        # On a cluster, outcomes of a queue whose shard could not be reached, with the task
        # reporting them as soon as it can: they must not hold back the other queues'.
        self.late: dict[str | None, list[tuple[ClaimKey, Outcome]]] = {}
        self.late_reporters: dict[str | None, asyncio.Task[None]] = {}
        self.finished: set[ClaimKey] = set()
        self.expired: set[ClaimKey] = set()  # runs that hit their timeout and were cancelled
        self.slot_free = asyncio.Event()
        # Per queue, slots on offer for hand-over, and tasks handed over still in the inbox:
        # neither is free for a claim. The claim script reports both, so every claim
        # re-syncs these estimates. A consumer of several queues offers the same free slots
        # in each, so the slots on offer are the most offered in any one queue.
        self.offers: dict[str, int] = {}
        self.waiting: dict[str, int] = {}
        self.resync = False  # the inbox was silent: claim (re-sync the offers) even if busy
        # The last run ended well and nothing else runs: no other slot will free up to
        # gather, so the claim loop re-offers the slot at once and the report rides on that
        # call (complete_claim.lua). At a quiet rate a wide consumer otherwise made two
        # script calls per task: the flusher's report, then the re-offer a gather later.
        self.claim_now = False
        self.closing = False  # shutting down: the inbox is sealed
        # Claim in batches when busy: wait for this many free slots (or CLAIM_GATHER_SECONDS)
        # instead of one claim round trip per finished task. Small batches refill slots
        # sooner (a burst's tail starts earlier) and measured no slower in a drain.
        self.claim_batch = max(1, concurrency // 16)
        self.started = time.time()
        self.processed = 0
        # Claims (with the reports they carry) go out on a connection of their own: one call
        # at a time from the claim loop, without redis-py's per-call cost (standalone only).
        self.direct = ScriptConnection.for_conn(conn)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain within SHUTDOWN_GRACE and hand back the rest."""
        # Beat before the first claim, so a crash right after it is recovered by heartbeat.
        self.types = ",".join(sorted(self._runnable_types()))
        if not self.types:
            logger.warning("%s has no handler for any task type: it will run nothing", self.name)
        await self._beat()
        beat = asyncio.create_task(self._heartbeat_loop(stop))
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: self.slot_free.set())  # wakes a busy claim loop
        flusher = asyncio.create_task(self._flush_loop())
        await self._refresh_served(force=True)
        reader = asyncio.create_task(self._inbox_loop(stop))
        controls = self.controls = Fanout(self.conn, QUEUE_CONTROL_CHANNEL)
        controls.add(self._on_control)
        controls.start()
        # Cancels published before the subscription is confirmed would be missed: once it is,
        # what runs by then is checked (nothing to read when nothing runs yet).
        self.cancel_check = asyncio.create_task(self._check_cancels())
        logger.info(
            "%s started (%s, %d slots, lane %s, %s)",
            self.name,
            self.instance_id,
            self.concurrency,
            self.lane,
            self.selection.describe(),
        )
        # Shutdown is bounded step by step (SPEC: SHUTDOWN_GRACE, then hand back): a Redis
        # call that never answers or a callee that swallows its cancellation is logged and
        # left behind instead of holding the process past its container's stop timeout.
        try:
            await self._claim_loop(stop)
        finally:
            with contextlib.suppress(Exception):
                await controls.aclose()
            if self.cancel_check is not None:
                await end_within([self.cancel_check], 0)
            await self._close_inbox(reader)
            await self._drain()
            self.outcomes.put_nowait(None)  # the flusher reports what is queued, then returns
            if await end_within([flusher], max(self.settings.shutdown_grace_seconds, 1)):
                logger.error("%s stopped before every outcome was reported", self.name)
            if await end_within(list(self.late_reporters.values()), SHUTDOWN_CALL_SECONDS):
                # Their shard is still away: the leases run out and recovery takes them.
                logger.error("%s stopped before it could report %s", self.name, list(self.late))
            stopping.cancel()
            await end_within([beat, stopping], 0)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_CALL_SECONDS):
                    await heartbeats.leave(self.conn, self.service, self.instance_id)
            if self.direct is not None:
                with contextlib.suppress(Exception):
                    await self.direct.aclose()
            logger.info("%s stopped after %d tasks", self.name, self.processed)

    def _runnable_types(self) -> Collection[str]:
        if self.given_types is not None:
            return self.given_types
        return [name for name in registry.names() if self.lookup(name) is not None]

    def _on_offer(self) -> int:
        """Slots not free for a claim: on offer somewhere, or taken by an unread hand-over."""
        return max(self.offers.values(), default=0) + sum(self.waiting.values())

    def _free(self) -> int:
        return self.concurrency - len(self.running) - self._on_offer()

    async def _refresh_served(self, *, force: bool = False) -> None:
        """With `*`, the queues there are now (read at most every SERVED_REFRESH_SECONDS)."""
        if self.selection.mode != "all":
            return
        if force or time.monotonic() - self.served_at > SERVED_REFRESH_SECONDS:
            self.served = await queues.known(self.conn)
            self.served_at = time.monotonic()

    def _claimable(self) -> list[str]:
        """Served queues in this round's order, less those paused or out of tokens."""
        now = time.monotonic()
        return [
            name
            for name in self.selection.order(self.served)
            if name not in self.paused
            and self.limited_until.get(name, 0.0) <= now
            and self.unreachable.get(name, (0.0, 0.0))[0] <= now
        ]

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        pause = 0.0
        while not stop.is_set():
            free = self._free()
            on_offer = self._on_offer()
            gather = (self.running or on_offer) and not self.claim_now
            if not self.resync and free < self.claim_batch and gather:
                # Busy, or the free slots are on offer: gather finished slots into one claim.
                # A free slot not on offer waits at most CLAIM_GATHER_SECONDS (then the claim
                # offers it), so neither long tasks nor hand-overs leave it idle for long.
                self.slot_free.clear()
                try:
                    async with asyncio.timeout(CLAIM_GATHER_SECONDS if free > 0 else None):
                        await self.slot_free.wait()
                    continue  # woken: look again
                except TimeoutError:
                    pass  # gathered long enough: claim (and offer) what is free
            self.resync = self.claim_now = False
            try:
                await self._refresh_served()
                await self._claim_round()
                pause = 0.0
            except Exception as exc:
                pause = min(max(pause * 2, 0.1), 2.0)
                logger.warning(
                    "%s cannot claim (%s); retrying in %.1fs", self.name, describe(exc), pause
                )
                await wait_or_stop(stop, pause)
                continue
            if not self.running and not self._on_offer():
                await self._wait_unblocked(stop)  # every served queue is paused or limited

    async def _claim_round(self) -> None:
        """Fill the free slots from the served queues in order; offer what stays free.

        With one queue that is one claim call. With several, the first pass only claims, in
        order, and a second offers what no queue could fill in each queue (tasks that came
        meanwhile are claimed by it too): offering in a queue before a later one filled the
        slots would promise them twice.
        """
        order = self._claimable()
        want = self.concurrency - len(self.running) - sum(self.waiting.values())
        if len(order) == 1:
            want -= self._take(order[0], await self._claim(order[0], want, offer=True))
            return
        if self.selection.mode != "strict" and self.dry:
            # A queue found empty a moment ago goes last (strict order keeps its order: a
            # later queue must never run while an earlier one has work). It is still
            # claimed when the others cannot fill the slots, and offered in below.
            now = time.monotonic()
            dry = {name for name, until in self.dry.items() if until > now}
            order = [n for n in order if n not in dry] + [n for n in order if n in dry]
        failed: list[RedisUnavailable] = []
        for name in order:
            if want <= 0:
                break
            want -= await self._claim_apart(name, want, offer=False, failed=failed)
        if want > 0:
            reading = set(self.reading)  # an offer needs its inbox read
            for name in order:
                if name in reading and want > 0 and name not in self.unreachable:
                    want -= await self._claim_apart(name, want, offer=True, failed=failed)
        if failed and len(failed) >= len(order):
            raise failed[0]  # no queue answered: the claim loop backs off

    async def _claim_apart(
        self, queue: str, count: int, *, offer: bool, failed: list[RedisUnavailable]
    ) -> int:
        """One claim of a round over several queues. A queue that cannot be reached (its
        shard of a Redis Cluster failing over or down) is set aside, with a growing pause,
        and the round goes on with the others: one shard down stops only its own queues."""
        try:
            reply = await self._claim(queue, count, offer=offer)
            taken = self._take(queue, reply)
        except RedisUnavailable as exc:
            _, last = self.unreachable.get(queue, (0.0, 0.0))
            pause = min(max(last * 2, 0.1), UNREACHABLE_PAUSE_MAX_SECONDS)
            self.unreachable[queue] = (time.monotonic() + pause, pause)
            self.resync = True  # whether that claim offered anything is unknown
            failed.append(exc)
            return 0
        self.unreachable.pop(queue, None)
        if taken < count and not reply.paused and reply.retry_at_ms is None:
            self.dry[queue] = time.monotonic() + DRY_SECONDS  # nothing more was ready
        else:
            self.dry.pop(queue, None)
        return taken

    async def _claim(self, queue: str, count: int, *, offer: bool) -> transitions.ClaimReply:
        """One claim call; the successful runs of `queue` still waiting for the flusher go
        with it (complete_claim.lua): a single-slot worker reports a task and takes the next
        in one round trip. Should the call fail, they go back to the flusher."""
        completed = self._unreported_successes(queue)
        try:
            reply = await transitions.claim_or_offer(
                self.conn,
                self.lane,
                max(count, 0),
                worker=self.name,
                owner=self.instance_id,
                lease_seconds=self.settings.task_lease_seconds,
                offer=offer,
                queue=queue,
                offers_held=self.offers.get(queue, 0),
                types=self.types,
                completed=[outcome for _, outcome in completed],
                settings=self.settings,
                via=self.direct,
            )
        except BaseException:
            for item in completed:  # the flusher reports them (and splits out a bad one)
                self.outcomes.put_nowait(item)
            raise
        if completed:
            self._forget(completed, reply.codes)
        return reply

    def _unreported_successes(self, queue: str) -> list[tuple[ClaimKey, Outcome]]:
        """Take the successful outcomes of `queue` out of the flusher's queue (in order; the
        rest stay there in theirs). None while that queue has outcomes waiting for its shard:
        those are reported in order, by the late reporter."""
        if self.outcomes.empty() or queue in self.late:
            return []
        taken: list[tuple[ClaimKey, Outcome]] = []
        kept: list[tuple[ClaimKey, Outcome] | None] = []
        while not self.outcomes.empty():
            item = self.outcomes.get_nowait()
            if (
                item is not None
                and item[1].ok
                and item[1].queue == queue
                and len(taken) < MAX_REPORT_BATCH
            ):
                taken.append(item)
            else:
                kept.append(item)
        for rest in kept:
            self.outcomes.put_nowait(rest)
        return taken

    def _take(self, queue: str, reply: transitions.ClaimReply) -> int:
        """Start what a claim took and note the queue's offers and limits; how many started."""
        self.offers[queue], self.waiting[queue] = reply.offered, reply.waiting
        if self.on_backlog is not None and (reply.offered or reply.claimed):
            self.on_backlog(not reply.offered)
        if reply.paused:
            self.paused.add(queue)
        elif reply.retry_at_ms is not None:
            self._limit(queue, reply.retry_at_ms)
        for item in reply.claimed:
            self._start(item)
        return len(reply.claimed)

    def _limit(self, queue: str, retry_at_ms: int) -> None:
        """Leave a rate- or concurrency-limited queue alone until its next token is due."""
        server_now = time.time() * 1000 + self.conn.clock_offset_ms
        delay = max((retry_at_ms - server_now) / 1000, 0.001)
        self.limited_until[queue] = time.monotonic() + delay
        asyncio.get_running_loop().call_later(delay, self._wake, queue)

    def _wake(self, queue: str | None = None) -> None:
        """A served queue may be claimable again: claim at once, even while busy."""
        if queue is not None:
            self.paused.discard(queue)
            self.limited_until.pop(queue, None)
        self.resync = True
        self.slot_free.set()

    def _on_control(self, raw: str | None) -> None:
        """A pause, resume, limit change or freed concurrency slot of some queue."""
        if raw is None:  # the subscription dropped: events may be lost, look at every queue
            self.paused.clear()
            self.limited_until.clear()
            self._wake()
            if self.cancel_check is None or self.cancel_check.done():
                self.cancel_check = asyncio.create_task(self._check_cancels())
            else:  # the check under way may have read the flags before the missed cancel
                self.cancels_unchecked = True
            return
        try:
            message = codec.loads(raw)
            queue, lane = str(message["queue"]), message.get("lane")
            if message.get("event") == "cancel":  # cancel.lua: a running task's cancel
                if message.get("owner") == self.instance_id:
                    self._cancel_run((str(message["task_id"]), str(message["token"])))
                return
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        if queue in self.served and lane in (None, self.lane):
            self._wake(queue)

    async def _wait_unblocked(self, stop: asyncio.Event) -> None:
        """Nothing runs and nothing is on offer: sleep until a limit's next token is due, a
        control event, or INBOX_WAIT_SECONDS (a new queue may have appeared)."""
        now = time.monotonic()
        due = min((at - now for at in self.limited_until.values()), default=INBOX_WAIT_SECONDS)
        self.slot_free.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(min(due, INBOX_WAIT_SECONDS), 0.001)):
                await self.slot_free.wait()

    def _start(self, item: Claimed) -> None:
        self.held[item.key] = item
        run = self.runs[item.key] = Run(item, self.conn, asyncio.get_running_loop())
        if self.early_cancels and item.key in self.early_cancels:
            del self.early_cancels[item.key]
            run.cancelled = True  # its cancel came while it waited in the inbox
        self.running[item.key] = asyncio.create_task(self._run_one(item))

    def _cancel_run(self, claim: ClaimKey) -> None:
        """SPEC section 10: interrupt a run whose cancel was requested. An async handler is
        cancelled now; a thread handler sees ctx.cancelled and gets
        THREAD_CANCEL_GRACE_SECONDS to stop. The run then ends cancelled (_outcome_of)."""
        run, job = self.runs.get(claim), self.running.get(claim)
        if run is None and claim not in self.finished:  # maybe still in the inbox
            self.early_cancels[claim] = None
            while len(self.early_cancels) > MAX_EARLY_CANCELS:
                del self.early_cancels[next(iter(self.early_cancels))]
        if run is None or job is None or run.cancelled or run.finished:
            return  # not ours (any more), asked already, or its handler finished first
        run.cancelled = True
        task_id = claim[0]
        logger.info("%s cancels task %s on request", self.name, task_id, extra={"task_id": task_id})
        if not run.started:
            return  # _outcome_of sees the flag before it calls the handler
        loop = asyncio.get_running_loop()
        if asyncio.iscoroutinefunction(self.lookup(run.item.task.type)):
            self._interrupt(claim, job)
        else:
            loop.call_later(THREAD_CANCEL_GRACE_SECONDS, self._interrupt, claim, job)

    def _interrupt(self, claim: ClaimKey, job: asyncio.Task[None]) -> None:
        run = self.runs.get(claim)
        if run is None or run.finished or job.done() or self.running.get(claim) is not job:
            return
        job.cancel()
        asyncio.get_running_loop().call_later(
            ABANDON_AFTER_SECONDS, self._abandon_cancelled, claim, job
        )

    def _abandon_cancelled(self, claim: ClaimKey, job: asyncio.Task[None]) -> None:
        item = self.held.get(claim)
        if item is not None and not job.done() and self.running.get(claim) is job:
            logger.error("%s abandons task %s: it ignored its cancel", self.name, claim[0])
            self._settle(claim, self._cancelled(item))

    @staticmethod
    def _cancelled(item: Claimed) -> Outcome:
        task = item.task
        error = CANCELLED_ERROR
        return Outcome(task.id, item.token, False, error=error, cancelled=True, queue=task.queue)

    async def _check_cancels(self) -> None:
        """The control subscription is new or dropped, so a cancel may have been missed: once
        it is confirmed, read the cancel flags of the tasks running here (one round trip per
        queue)."""
        if self.controls is None:
            return
        try:
            async with asyncio.timeout(60):
                await self.controls.ready()
            self.cancels_unchecked = True
            while self.cancels_unchecked:  # once more for each drop during a pass
                self.cancels_unchecked = False
                by_queue: dict[str, list[ClaimKey]] = {}
                for claim in list(self.runs):
                    by_queue.setdefault(self.runs[claim].item.task.queue, []).append(claim)
                for queue, claims in by_queue.items():
                    ids = [task_id for task_id, _ in claims]
                    asked = set(await queries.cancels_requested(self.conn, ids, queue=queue))
                    for claim in claims:
                        if claim[0] in asked:
                            self._cancel_run(claim)
        except Exception as exc:
            logger.warning("%s cannot check for missed cancels: %s", self.name, describe(exc))

    async def _inbox_loop(self, stop: asyncio.Event) -> None:
        """Start the tasks handed over to this consumer, until every sealed inbox runs out.
        There is one inbox per served queue; one BLPOP waits on all of them. On Redis
        Cluster each queue's inbox lives in its queue's slot and a BLPOP cannot span slots:
        each queue gets a reader of its own."""
        if self.conn.topology != "cluster":
            await self._read_inboxes(stop, None)
            return
        readers: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for name in self.served:
                    if name not in readers:
                        readers[name] = asyncio.create_task(self._read_inboxes(stop, name))
                self.reading = list(readers)
                if all(reader.done() for reader in readers.values()) and (
                    self.closing or self.sealed.issuperset(readers)
                ):
                    return
                # New queues (`*`) get a reader within a second.
                await asyncio.wait(list(readers.values()), timeout=SERVED_REFRESH_SECONDS)
        finally:
            for reader in readers.values():
                reader.cancel()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def _read_inboxes(self, stop: asyncio.Event, only: str | None) -> None:
        """Read the inboxes of every served queue (or only of queue `only`) until their seals
        have all been read, or the consumer is closing and they stay silent."""
        redis = self.conn.redis
        pause = 0.0
        while True:
            try:
                names = list(self.served) if only is None else [only]
                if only is None:
                    self.reading = names
                inboxes = {self.conn.queue(name).inbox(self.instance_id): name for name in names}
                popped = await self._wait_for_handovers(inboxes)
                if popped is None:
                    if self.closing:
                        return  # sealed, and the seals were taken back with the inboxes
                    if self._on_offer() and not stop.is_set():
                        self.resync = True  # nothing handed over for a while: re-sync
                        self.slot_free.set()
                    continue
                inbox, messages = popped
                queue = inboxes[inbox]
                for message in messages:
                    if not await self._receive(message, queue, stop, names):
                        return
                # The tasks just started run first, up to their own first await: their starts
                # would otherwise wait for the next call's write (enqueue->start latency).
                await asyncio.sleep(0)
                if not self.conn.use_functions:  # Redis 6.2: a burst's rest, in one LPOP
                    more = self.offers.get(queue, 0) + self.waiting.get(queue, 0)
                    burst = await guarded(redis.lpop(inbox, more)) if more > 0 else None
                    for message in cast("list[str]", burst or []):
                        if not await self._receive(message, queue, stop, names):
                            return
                pause = 0.0
            except Exception as exc:
                # A failover (UNBLOCKED, a reset, a moved slot) lands here: back off and block
                # again; the next claim re-offers the slots (SPEC section 8). A queue's own
                # reader (on a cluster) backs off longer: every call to a shard that is down
                # makes redis-py re-read the topology, which cuts the other readers' calls.
                cap = 2.0 if only is None else UNREACHABLE_PAUSE_MAX_SECONDS
                pause = min(max(pause * 2, 0.1), cap)
                logger.warning("%s cannot read its inbox (%s)", self.name, describe(exc))
                self.resync = True
                self.slot_free.set()
                await asyncio.sleep(pause)

    async def _wait_for_handovers(self, inboxes: dict[str, str]) -> tuple[str, list[str]] | None:
        """Wait up to INBOX_WAIT_SECONDS for tasks handed over in these inboxes (name ->
        queue): one inbox and what was popped from it, or None.

        On Redis 7 one BLMPOP takes a burst with its first task: up to all an inbox can hold
        (a task per slot, as only offered slots are handed tasks, and the seal): its count is
        set as it starts to wait, when the offers it will serve may not be made yet. On
        Redis 6.2 a BLPOP takes the first and the reader pops the rest with an LPOP, which at
        a quiet rate comes back empty: a round trip per task that BLMPOP saves."""
        redis = self.conn.redis
        if self.conn.use_functions:
            names, most = list(inboxes), self.concurrency + 1
            reply = await guarded(
                redis.blmpop(INBOX_WAIT_SECONDS, len(names), *names, direction="LEFT", count=most)
            )
            return None if reply is None else (str(reply[0]), [str(m) for m in reply[1]])
        reply = await guarded(redis.blpop(list(inboxes), timeout=INBOX_WAIT_SECONDS))
        return None if reply is None else (str(reply[0]), [str(reply[1])])

    async def _receive(
        self, message: str, queue: str, stop: asyncio.Event, reading: list[str]
    ) -> bool:
        """Start one handed-over task (or keep it to hand back when stopping); False once the
        seals `withdraw_offers` leaves last in each inbox (of `reading`) have all been read."""
        try:
            item = transitions.handed_over(message, self.instance_id, queue)
        except Exception as exc:  # not ours to fix: its lease runs out and recovers it
            logger.error("%s cannot read a handed-over task: %s", self.name, describe(exc))
            return True
        if item is None:
            self.sealed.add(queue)
            return not self.sealed.issuperset(reading)
        if self.waiting.get(queue, 0) > 0:  # counted at the last claim, or an offer used
            self.waiting[queue] -= 1
        else:
            self.offers[queue] = max(self.offers.get(queue, 0) - 1, 0)
        if stop.is_set():
            self.held[item.key] = item  # _drain hands it back
            return True
        self._start(item)
        others = [name for name in self.reading if name != queue and self.offers.get(name)]
        if others:
            # The slot it took is on offer in the other queues too: take one offer back from
            # each, so a burst across queues cannot hand this consumer more than it has.
            with contextlib.suppress(Exception):
                taken = await heartbeats.withdraw_one_offer(
                    self.conn, self.instance_id, self.lane, others
                )
                for name, removed in zip(others, taken, strict=True):
                    self.offers[name] = max(self.offers[name] - removed, 0)
        return True

    async def _close_inbox(self, reader: asyncio.Task[None]) -> None:
        """Withdraw the offers, then read the inboxes up to their seals, so that every task
        handed over before is started or handed back, none left behind."""
        try:
            async with asyncio.timeout(SHUTDOWN_CALL_SECONDS):
                await heartbeats.withdraw_offers(
                    self.conn, self.instance_id, seal_inbox=True, queues=self.reading
                )
        except Exception as exc:  # Redis is away: recovery takes over what was handed over
            logger.warning("%s could not close its inbox: %s", self.name, describe(exc))
            reader.cancel()  # no seal is coming
        self.closing = True  # a seal taken back by recovery: stop at the next silent wait
        if await end_within([reader], INBOX_WAIT_SECONDS + 1):
            logger.error("%s: its inbox reader did not stop", self.name)

    async def _run_one(self, item: Claimed) -> None:
        task = item.task
        log_step(logger, f"{self.name} received task {task.id}", task.id)
        if task.scheduled_for is not None:
            await _until(task.scheduled_for.timestamp())
        log_step(
            logger,
            f"{self.name} processing task {task.id} (type: {task.type}, attempt {item.attempt})",
            task.id,
        )
        if item.poison is not None:
            logger.error("%s cannot run task %s: %s", self.name, task.id, item.poison)
            outcome = Outcome(
                task.id, item.token, False, error=item.poison, final=True, queue=task.queue
            )
        else:
            run = self.runs[item.key]
            traced = tracing.tracer_for(self.service)  # None unless OTEL_* turned it on
            if traced is None:
                outcome = await self._outcome_of(item, run)
            else:  # the `wait` and `run` spans (SPEC section 13)
                outcome = await traced.run(item, self._outcome_of(item, run))
            run.finished = True
            if run.writer is not None:  # its last progress report goes before the outcome
                await run.writer.finish(write=not outcome.cancelled)
        self._settle(item.key, outcome)

    def _settle(self, claim: ClaimKey, outcome: Outcome) -> None:
        """Free the slot and queue the outcome for the flusher (once per run)."""
        run = self.runs.pop(claim, None)
        if self.running.pop(claim, None) is None:
            return  # abandoned after its timeout: that outcome is already reported
        if run is not None:
            run.finished = True  # abandoned (it runs on): no cancel nor report concerns it now
            if run.writer is not None:
                run.writer.closed = True
        self.finished.add(claim)
        if not self.running and outcome.ok:
            self.claim_now = True
        if self._free() >= self.claim_batch or not self.running:
            self.slot_free.set()
        self.outcomes.put_nowait((claim, outcome))

    async def _outcome_of(self, item: Claimed, run: Run) -> Outcome:
        """Run the handler within its timeout; whatever it raises (bar our own cancellation)
        is the task's error. A run whose cancel was requested ends cancelled, whatever the
        handler returned or raised (SPEC section 10).

        The handler runs in this slot's own task, bounded by one timer that cancels it: no
        second task and no asyncio.wait per run, which cost more than a no-op handler.
        """
        task, claim = item.task, item.key
        handler = self.lookup(task.type)
        timeout = task.timeout_seconds or self.settings.default_timeout_seconds
        me = asyncio.current_task()
        assert me is not None
        expiry = asyncio.get_running_loop().call_later(timeout, self._expire, item, me, timeout)
        try:
            if handler is None:
                raise LookupError(f"no handler for task type {task.type!r} in {self.service}")
            ctx = TaskContext(task=task, attempt=item.attempt, settings=self.settings, control=run)
            if task.depends_on:  # SPEC section 11: one read, for tasks with dependencies only
                ctx.dependency_results.update(await queries.dependency_results(self.conn, task))
            if run.cancelled:
                return self._cancelled(item)  # cancelled before it started
            run.started = True  # from here a cancel interrupts it (_cancel_run)
            result = await call_handler(handler, ctx)
            if run.cancelled:
                return self._cancelled(item)
            if claim in self.expired:  # it swallowed the cancellation and returned anyway
                return self._timed_out(item, timeout)
            encoded = encode_result(result)
            return Outcome(
                task.id, item.token, True, result=result, result_json=encoded, queue=task.queue
            )
        except asyncio.CancelledError as exc:
            if run.cancelled:
                me.uncancel()
                return self._cancelled(item)
            if claim in self.expired:
                me.uncancel()
                return self._timed_out(item, timeout)
            if me.cancelling():
                raise  # shutdown: _drain hands the task back
            error = describe(exc) or "cancelled"
            return Outcome(task.id, item.token, False, error=error, queue=task.queue)
        except BaseException as exc:  # SystemExit, GeneratorExit, ...: the handler's doing
            if run.cancelled:  # TaskCancelled (raise_if_cancelled), or whatever it raised
                return self._cancelled(item)
            if claim in self.expired:
                return self._timed_out(item, timeout)
            tracing.record_exception(exc)  # on the `run` span, when tracing
            # Permanent: no retry can fix it, so the task fails now, budget or not.
            final = isinstance(exc, Permanent)
            error = describe(exc)
            return Outcome(task.id, item.token, False, error=error, final=final, queue=task.queue)
        finally:
            expiry.cancel()
            self.expired.discard(claim)

    @staticmethod
    def _timed_out(item: Claimed, timeout: float) -> Outcome:
        error = describe(TaskTimeout(f"timed out after {timeout:g}s"))
        return Outcome(item.task.id, item.token, False, error=error, queue=item.task.queue)

    def _expire(self, item: Claimed, job: asyncio.Task[Any], timeout: float) -> None:
        """The timeout: cancel the run; a handler that swallows the cancellation loses its
        slot ABANDON_AFTER_SECONDS later (it runs on, its outcome ignored)."""
        self.expired.add(item.key)
        job.cancel()
        asyncio.get_running_loop().call_later(
            ABANDON_AFTER_SECONDS, self._abandon, item, job, timeout
        )

    def _abandon(self, item: Claimed, job: asyncio.Task[Any], timeout: float) -> None:
        if not job.done() and self.running.get(item.key) is job:
            logger.error("%s abandons task %s: it ignored its timeout", self.name, item.task.id)
            self._settle(item.key, self._timed_out(item, timeout))

    async def _flush_loop(self) -> None:
        """Report outcomes as they come, batching whatever queued up during the last report."""
        while True:
            first = await self.outcomes.get()
            batch: list[tuple[ClaimKey, Outcome]] = []
            last = first is None
            if first is not None:
                batch.append(first)
            while not last and not self.outcomes.empty() and len(batch) < MAX_REPORT_BATCH:
                item = self.outcomes.get_nowait()
                last = item is None
                if item is not None:
                    batch.append(item)
            if batch:
                await self._report(batch)
            if last:
                return

    async def _report(self, batch: list[tuple[ClaimKey, Outcome]]) -> None:
        """Report a batch and forget its claims.

        On a cluster each queue's outcomes are reported on their own (concurrently: one
        pipeline per queue, as redis-py sends one per node anyway). Those of a queue whose
        shard is failing over or down go to a reporter of that queue that retries until it
        answers, and the flusher goes on: without this, one shard down would keep every
        later outcome of this consumer, in every queue, from being reported (SPEC section 8:
        a shard that is down stops only its own queues)."""
        if self.conn.topology != "cluster":
            self._forget(batch, await self._store_or_split([o for _, o in batch]))
            return
        by_queue: dict[str | None, list[tuple[ClaimKey, Outcome]]] = {}
        for item in batch:
            by_queue.setdefault(item[1].queue, []).append(item)
        await asyncio.gather(*(self._report_queue(q, items) for q, items in by_queue.items()))

    async def _report_queue(self, queue: str | None, batch: list[tuple[ClaimKey, Outcome]]) -> None:
        if queue in self.late:  # reported after the ones already waiting, in order
            self.late[queue] += batch
            return
        try:
            codes = await self._store_or_split([o for _, o in batch], patient=False)
        except RedisUnavailable as exc:
            logger.warning(
                "%s cannot report outcomes in queue %s (%s); retrying apart",
                self.name,
                queue,
                describe(exc),
            )
            self.late[queue] = list(batch)
            self.late_reporters[queue] = asyncio.create_task(self._report_late(queue))
            return
        self._forget(batch, codes)

    async def _report_late(self, queue: str | None) -> None:
        """Report a queue's late outcomes (and those that join them meanwhile) once its shard
        answers; the heartbeat keeps their leases meanwhile."""
        try:
            while batch := self.late[queue]:
                self.late[queue] = []
                outcomes = [o for _, o in batch]
                pause = UNREACHABLE_PAUSE_MAX_SECONDS
                codes = await self._store_or_split(outcomes, max_pause=pause)
                self._forget(batch, codes)
        finally:
            self.late.pop(queue, None)
            self.late_reporters.pop(queue, None)

    def _forget(self, batch: list[tuple[ClaimKey, Outcome]], codes: list[str]) -> None:
        for (claim, outcome), code in zip(batch, codes, strict=True):
            self.held.pop(claim, None)
            self.finished.discard(claim)
            self.processed += 1
            self._log_outcome(outcome, code)

    async def _store(
        self, outcomes: list[Outcome], *, patient: bool = True, max_pause: float = 2.0
    ) -> list[str]:
        """report_outcomes, retried for as long as Redis is unavailable (the heartbeat keeps
        the leases, so the tasks stay safe), or raising RedisUnavailable when not `patient`;
        any other error is raised: it concerns the outcomes, and sending them again would
        fail the same way for ever."""
        tries = 0
        while True:
            try:
                return await transitions.report_outcomes(self.conn, outcomes, self.settings)
            except RedisUnavailable as exc:
                if not patient:
                    raise
                tries += 1
                logger.warning("%s cannot report outcomes (%s); retrying", self.name, describe(exc))
                await asyncio.sleep(min(0.1 * 2**tries, max_pause))

    async def _store_or_split(
        self, outcomes: list[Outcome], *, patient: bool = True, max_pause: float = 2.0
    ) -> list[str]:
        """Store outcomes; one that cannot be stored fails its own task, not the batch's.
        RedisUnavailable (when not `patient`) concerns them all: it is raised."""
        try:
            return await self._store(outcomes, patient=patient, max_pause=max_pause)
        except RedisUnavailable:
            raise  # not patient: the caller reports them later
        except Exception as exc:
            if len(outcomes) > 1:
                return [
                    code
                    for one in outcomes
                    for code in await self._store_or_split(
                        [one], patient=patient, max_pause=max_pause
                    )
                ]
            outcome = outcomes[0]
            logger.error(
                "%s cannot store the outcome of task %s (%s); failing the task instead",
                self.name,
                outcome.task_id,
                describe(exc),
                extra={"task_id": outcome.task_id},
            )
            # A run that succeeded is not run again for a result it could not store.
            error = f"the outcome of this run could not be stored: {describe(exc)}"
            failure = Outcome(
                outcome.task_id,
                outcome.token,
                False,
                error=error,
                final=outcome.ok,
                queue=outcome.queue,
            )
            try:
                return await self._store([failure], patient=patient, max_pause=max_pause)
            except RedisUnavailable:
                raise
            except Exception as again:  # its lease runs out and recovery takes it
                return [f"error: {describe(again)}"]

    def _log_outcome(self, outcome: Outcome, code: str) -> None:
        extra = {"task_id": outcome.task_id}
        if code == "ok":
            log_step(logger, f"{self.name} completed task {outcome.task_id}", outcome.task_id)
        elif code.startswith("error"):
            logger.error(
                "%s outcome of task %s not recorded (%s); its lease will expire and recover it",
                self.name,
                outcome.task_id,
                code,
                extra=extra,
            )
        elif code in ("retrying", "failed", "cancelled"):
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
            # Liveness is this loop going round, with Redis or without (SPEC section 8): a
            # Redis outage must not get every worker restarted. The beat is bounded, so a
            # Redis that accepts but never answers cannot stall the loop either.
            liveness.touch(self.service)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(2 * interval, 1.0)):
                    await self._beat()

    async def _beat(self) -> None:
        """Say we are alive and what we hold, then renew the leases of everything held."""
        info = {
            "name": self.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "lane": self.lane,
            "queues": self.served,
            "types": self.types.split(",") if self.types else [],
            "slots": self.concurrency,
            "running": len(self.running),
            "tasks": [task_id for task_id, _ in self.running][:20],
            "processed": self.processed,
            "started_at": self.started,
        }
        ttl = self.settings.heartbeat_seconds * 5
        try:
            await heartbeats.beat(self.conn, self.service, self.instance_id, info, ttl)
        except Exception as exc:
            logger.warning("%s heartbeat failed: %s", self.name, describe(exc))
        by_queue: dict[str, dict[str, None]] = {}
        for item in self.held.values():
            by_queue.setdefault(item.task.queue, {})[item.task.id] = None
        for queue, ids in by_queue.items():
            # Each queue on its own: a queue whose shard is down (on a cluster) must not keep
            # the others' leases from being renewed, nor a beat that failed any of them.
            try:
                await transitions.extend_leases(
                    self.conn, list(ids), self.settings.task_lease_seconds, queue=queue
                )
            except Exception as exc:
                logger.warning(
                    "%s cannot renew leases in queue %s: %s", self.name, queue, describe(exc)
                )

    async def _drain(self) -> None:
        if self.running:
            logger.info("%s draining %d running tasks", self.name, len(self.running))
            stuck = await end_within(
                list(self.running.values()), self.settings.shutdown_grace_seconds
            )
            if stuck:  # handlers that swallowed their cancellation: hand their tasks back anyway
                logger.error(
                    "%s leaves %d running: each ignored its cancellation", self.name, len(stuck)
                )
        for claim, item in list(self.held.items()):
            if claim in self.finished:
                continue  # its outcome is queued; the flusher reports it
            task_id = item.task.id
            with contextlib.suppress(Exception):
                code = await transitions.requeue(
                    self.conn, task_id, item.token, f"{self.name} shut down", queue=item.task.queue
                )
                done = "handed back"
                if code == "cancel_requested":  # SPEC section 10: it ends, not runs again
                    await self._store([self._cancelled(item)], patient=False)
                    done = "cancelled"
                logger.info("%s %s task %s", self.name, done, task_id, extra={"task_id": task_id})
            self.held.pop(claim, None)


async def _until(due: float) -> None:
    """Wait for a due time up to MAX_EARLY_SECONDS away (the scheduler promotes tasks
    SCHEDULE_LEAD_SECONDS early); never return before it. A due time further off (a
    manually retried task that was scheduled for later, a skewed clock) is not waited for."""
    # The loop's timers may fire a little early (ms resolution): check the clock again.
    while 0 < (left := due - time.time()) <= MAX_EARLY_SECONDS:  # noqa: ASYNC110 - a clock time, not an event
        await asyncio.sleep(left)
