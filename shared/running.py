"""One run of a handler as its consumer sees it: the cancel flag and coalesced progress writes.

SPEC section 10. A `Run` is the `RunControl` behind a handler's `TaskContext`. Progress costs
nothing until a handler reports: the first report makes a `ProgressWriter`, which writes at
most one report per PROGRESS_INTERVAL_SECONDS (progress.lua, fenced by the claim's token)
and always the last one (a trailing write), which the consumer flushes before it reports the
run's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from shared import transitions
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.registry import RunControl
from shared.transitions import Claimed

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.1  # SPEC section 10: at most 10 progress events per second
FLUSH_SECONDS = 1.0  # the longest a run's outcome waits for its last progress write
Report = tuple[float, str | None]


class Run(RunControl):
    """One claim's run: what the consumer and the handler share (see RunControl)."""

    __slots__ = ("conn", "finished", "hop", "item", "loop", "started", "writer")

    def __init__(self, item: Claimed, conn: Conn, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.item, self.conn, self.loop = item, conn, loop
        self.started = False  # the handler was called (a cancel before that skips it)
        self.finished = False  # the handler returned or raised: a cancel now comes too late
        self.writer: ProgressWriter | None = None  # made by the first progress report
        self.hop = False  # a thread's report is on its way to the loop (it takes the newest)

    def report(self, percent: float, message: str | None) -> None:
        """Take a checked report from the handler's task or thread; written on the loop."""
        self.last_progress = (percent, message)
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:  # a thread handler
            here = None
        if here is self.loop:
            self._note(self.last_progress)
        elif not self.hop:
            # One wake-up of the loop at a time, however fast the thread reports: the loop
            # takes the newest report when it gets there (hop is cleared before it reads).
            self.hop = True
            with contextlib.suppress(RuntimeError):  # the loop closed while the thread ran on
                self.loop.call_soon_threadsafe(self._take_hop)

    def _take_hop(self) -> None:
        self.hop = False
        if self.last_progress is not None:
            self._note(self.last_progress)

    def _note(self, report: Report) -> None:
        if self.finished:
            return  # an abandoned handler that runs on: its run is over
        if self.writer is None:
            self.writer = ProgressWriter(self.conn, self.item)
        self.writer.note(report)


class ProgressWriter:
    """Writes one run's progress reports: at most one per PROGRESS_INTERVAL_SECONDS, the
    newest first-in-line, a repeat of what is stored skipped, the last always written."""

    def __init__(self, conn: Conn, item: Claimed) -> None:
        self.conn, self.item = conn, item
        self.pending: Report | None = None  # the newest report not written yet
        self.written: Report | None = None
        self.last_at = -math.inf  # monotonic time of the last write
        self.job: asyncio.Task[None] | None = None
        self.closed = False  # the claim is stale, or the run ended: nothing more is written

    def note(self, report: Report) -> None:
        if self.closed:
            return
        self.pending = None if report == self.written else report
        if self.pending is not None and (self.job is None or self.job.done()):
            self.job = asyncio.create_task(self._write(), name=f"progress {self.item.task.id}")

    async def _write(self) -> None:
        task = self.item.task
        while self.pending is not None and not self.closed:
            wait = self.last_at + PROGRESS_INTERVAL_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # a newer report may have come meanwhile
            report, self.pending = self.pending, None
            self.last_at = time.monotonic()
            try:
                code = await transitions.progress(
                    self.conn, task.id, self.item.token, *report, queue=task.queue
                )
            except RedisUnavailable as exc:
                logger.warning("cannot write the progress of task %s: %s", task.id, exc)
                if self.pending is None:
                    self.pending = report  # tried again after the interval
                continue
            except Exception:
                logger.exception("cannot write the progress of task %s", task.id)
                continue
            if code != "ok":  # this run's claim is no longer current: write nothing more
                logger.info("progress of task %s dropped (%s)", task.id, code)
                self.closed = True
                return
            self.written = report

    async def finish(self, *, write: bool) -> None:
        """The run ended: write what is pending first (`write`, within FLUSH_SECONDS), so the
        last report is stored before the outcome; then write nothing more."""
        job = self.job
        if write and job is not None and not job.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await asyncio.shield(job)
        self.closed = True
        if job is not None and not job.done():
            job.cancel()
