"""The driver every system module shares: the same producer workloads, measured the same way.

A system module defines `enqueue_one(arg)`, `enqueue_at(arg, due)` and optionally
`enqueue_bulk(args)` (sync or async), then calls `main(module_globals)`. The orchestrator runs

    python -m benchmarks.systems.<name> enqueue --n 10000 [--bulk]
    python -m benchmarks.systems.<name> rate --rate 200 --seconds 10
    python -m benchmarks.systems.<name> schedule --n 200 --delay 3

and reads one JSON line from stdout. Each task's argument is a float: the time it was sent
(latency), the time it is due (lateness), or -1 (warm-up); the task body RPUSHes
"<arg> <start time> <pid>" to RESULTS_KEY, the only work it does.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

RESULTS_KEY = "bench:results"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Where ours keeps its tasks (REDIS_URL of its producers), when not beside the results: the
# cluster workloads put the tasks on a Redis Cluster and the results on the bench Redis.
ENGINE_URL = os.environ.get("BENCH_ENGINE_URL") or REDIS_URL
BULK_CHUNK = 1000
# The task body's own Redis client, the same options for every system. redis-py 8 (ours)
# changed the default socket_timeout from None to 5 s, which wraps every command's write in
# asyncio.wait_for (a Task per command on Python 3.11, ~10 us); the peers' redis-py 6.4
# has None. Pinned here so the body costs the same everywhere.
BODY_CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": None}


def result_line(arg: float) -> str:
    """What the no-op task pushes: its argument, its start time and its process."""
    return f"{arg} {time.time()} {os.getpid()}"


class _Caller:
    """Calls a sync or async producer function the same way from the drivers below."""

    def __init__(self, funcs: dict[str, Any]) -> None:
        self.funcs = funcs
        self.is_async = any(inspect.iscoroutinefunction(f) for f in funcs.values() if callable(f))

    def has(self, name: str) -> bool:
        return callable(self.funcs.get(name))


async def _enqueue(c: _Caller, n: int, bulk: bool, arg: float) -> dict[str, Any]:
    one, many = c.funcs["enqueue_one"], c.funcs.get("enqueue_bulk")
    started = time.perf_counter()
    if bulk:
        for first in range(0, n, BULK_CHUNK):
            args = [arg] * min(BULK_CHUNK, n - first)
            await _maybe(many(args))
    else:
        for _ in range(n):
            await _maybe(one(arg if arg else time.time()))
    seconds = time.perf_counter() - started
    return {"n": n, "seconds": seconds, "per_second": n / seconds}


async def _rate(c: _Caller, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    """Send at a steady rate, on an absolute clock; warm-up sends carry -1."""
    one = c.funcs["enqueue_one"]
    total = int((seconds + warmup) * rate)
    warm = int(warmup * rate)
    start = time.perf_counter() + 0.05
    worst_lag = 0.0
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            if c.is_async:
                await asyncio.sleep(delay)
            else:
                time.sleep(delay)  # noqa: ASYNC251 - a sync producer blocks, as it would
        worst_lag = max(worst_lag, time.perf_counter() - due)
        await _maybe(one(-1.0 if i < warm else time.time()))
    elapsed = time.perf_counter() - start
    return {"sent": total - warm, "warmup": warm, "seconds": elapsed, "worst_lag": worst_lag}


async def _schedule(c: _Caller, n: int, delay: float) -> dict[str, Any]:
    """n tasks all due at the same moment, `delay` seconds from now."""
    due = time.time() + delay
    at = c.funcs["enqueue_at"]
    started = time.perf_counter()
    for _ in range(n):
        await _maybe(at(due, due))
    return {"n": n, "due": due, "enqueue_seconds": time.perf_counter() - started}


async def _maybe(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def main(funcs: dict[str, Any], setup: Callable[[], Any] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("enqueue")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--bulk", action="store_true")
    p.add_argument("--arg", type=float, default=0.0, help="fixed argument (0: send time)")
    p = sub.add_parser("rate")
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=1)
    p = sub.add_parser("schedule")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--delay", type=float, default=3)
    sub.add_parser("has-bulk")
    ns = parser.parse_args()
    caller = _Caller(funcs)

    async def go() -> dict[str, Any]:
        if setup is not None:
            await _maybe(setup())
        try:
            if ns.cmd == "enqueue":
                if ns.bulk and not caller.has("enqueue_bulk"):
                    return {"error": "no bulk enqueue in this system"}
                return await _enqueue(caller, ns.n, ns.bulk, ns.arg)
            if ns.cmd == "rate":
                return await _rate(caller, ns.rate, ns.seconds, ns.warmup)
            if ns.cmd == "schedule":
                return await _schedule(caller, ns.n, ns.delay)
            return {"bulk": caller.has("enqueue_bulk")}
        finally:
            closer = funcs.get("teardown")
            if callable(closer):
                await _maybe(closer())

    # Sync producers go through the same coroutine plumbing: one await of a plain value.
    result = asyncio.run(go())
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
