"""Process plumbing shared by the long-running services: stop signals and supervised loops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

from shared.errors import StoppedWhileWaiting

logger = logging.getLogger(__name__)


def instance_id(service: str) -> str:
    """A unique id for this process, readable in logs: <service>-<host>-<pid>-<random>."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so loops finish their work and exit cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if the stop event fired meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0))
    return stop.is_set()


async def every(
    stop: asyncio.Event, seconds: float, tick: Callable[[], Awaitable[Any]], name: str
) -> None:
    """Run `tick` every `seconds` until stopped; an error is logged and the loop goes on."""
    while not stop.is_set():
        try:
            await tick()
        except Exception:
            logger.exception("%s tick failed; retrying in %.1fs", name, seconds)
        if await wait_or_stop(stop, seconds):
            return


async def first_of(*aws: Awaitable[Any]) -> None:
    """Wait until the first awaitable finishes; cancel the others and wait for them to end."""
    jobs = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)


async def end_within(jobs: Collection[asyncio.Task[Any]], seconds: float) -> set[asyncio.Task[Any]]:
    """Give `jobs` `seconds` to finish, then cancel what still runs and give it as long
    again (at least a second) to end. Returns the jobs that never ended (a callee swallowed
    its cancellation): the caller logs them and goes on, so no single await can hold a
    shutdown for ever. Each job's exception is retrieved; the caller reads what it wants."""
    pending: set[asyncio.Task[Any]] = set(jobs)
    if pending:
        _, pending = await asyncio.wait(pending, timeout=seconds)
    if pending:
        for job in pending:
            job.cancel()
        # A cancelled job normally ends within a loop iteration or two; waiting at least a
        # second tells one that takes time to clean up from one that ignores the cancel.
        _, pending = await asyncio.wait(pending, timeout=max(seconds, 1.0))
    for job in jobs:
        if job.done() and not job.cancelled():
            job.exception()
    return pending


# Every task allocates coroutines, futures and dicts by the dozen, so the default threshold
# of 700 runs a young collection every few tasks; most of it is garbage by then anyway.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Freeze what start-up imported (modules, settings, registries: never garbage) out of
    the collector's sight and collect the young generation less often. Profiled on a worker
    draining no-op tasks, the cyclic collector took ~6% of its CPU, mostly re-walking the
    start-up objects in full collections."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


# Linux CPU scheduling policies a worker can run under (WORKER_SCHED_POLICY). SCHED_BATCH
# keeps a process's CPU share (its nice level) but gives up wake-up preemption: woken by a
# Redis reply, it waits for its turn instead of preempting the process that woke it, most
# often Redis itself, which on a shared box then sits behind the worker with the next
# worker's call while another core idles (docs/benchmarks.md, "Wake-up preemption").
SCHED_POLICIES = {"batch": "SCHED_BATCH", "normal": "SCHED_OTHER"}


def set_sched_policy(policy: str) -> bool:
    """Put the calling thread under `policy` ("batch" or "normal"); threads it starts later
    inherit it. False where this platform has no such policy or forbids the change (a
    seccomp profile): the thread then runs as the system schedules it."""
    chosen = getattr(os, SCHED_POLICIES[policy], None)
    if chosen is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, chosen, os.sched_param(0))
    except OSError:
        return False
    return True


def use_sched_policy(setting: str) -> Callable[[bool], None] | None:
    """Apply WORKER_SCHED_POLICY at start-up, before any thread starts.

    "batch" and "normal" hold for the process's life. "auto" starts normal and returns the
    switch a consumer calls after each claim: batch while it has a backlog (its claims take
    tasks and leave no slot on offer: throughput, where preempting Redis costs the most),
    normal while it waits for hand-overs (a woken idle worker should start its task at
    once). Only the event loop's thread switches; a task thread keeps what it started with."""
    if setting not in ("auto", *SCHED_POLICIES):
        raise ValueError(f"unknown scheduling policy {setting!r} (auto, batch, normal)")
    if not set_sched_policy("normal" if setting == "auto" else setting):
        logger.warning("scheduling policy %s is not available here; left as it is", setting)
        return None
    logger.info("scheduling policy: %s", setting)
    if setting != "auto":
        return None
    current = "normal"

    def backlogged(yes: bool) -> None:
        nonlocal current
        wanted = "batch" if yes else "normal"
        if wanted != current and set_sched_policy(wanted):
            current = wanted

    return backlogged


def run(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run with uvloop when it is installed, after tune_gc."""
    tune_gc()
    try:
        import uvloop

        uvloop.run(_ending_strays(main))
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we ship
        asyncio.run(_ending_strays(main))


async def _ending_strays(main: Coroutine[Any, Any, None]) -> None:
    """Run `main`, then end the tasks it left behind. asyncio.run would wait for ever on one
    that swallows its cancellation (a task handler catching CancelledError in a loop): such
    a process is logged and exits without it, instead of hanging until it is killed."""
    try:
        await main
    except StoppedWhileWaiting as exc:
        logger.info("%s", exc)
    finally:
        me = asyncio.current_task()
        strays = [task for task in asyncio.all_tasks() if task is not me]
        if strays and (stuck := await end_within(strays, 0)):
            failed = sys.exc_info()[0] is not None
            logger.error("exiting with %d tasks that ignored their cancellation", len(stuck))
            logging.shutdown()  # flush the log handlers: os._exit skips it
            os._exit(1 if failed else 0)
