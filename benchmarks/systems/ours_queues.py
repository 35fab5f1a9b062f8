"""Ours only: the producer commands of the named-queue workloads (SPEC section 9).

    python -m benchmarks.systems.ours_queues enqueue --n 10000 --queues a,b,c [--bulk]
    python -m benchmarks.systems.ours_queues limit --queue limited --tasks 100 --per-seconds 1

`enqueue` spreads n `bench.noop` tasks evenly over the queues: one at a time in turn (a, b,
c, a, ...), as drain_high's producer sends them, or with --bulk one `enqueue_many` call of
up to 1000 per queue in turn. A task's argument is its queue's position plus one (1.0 for
the first queue, ...), so the orchestrator can tell from the start times which queue ran
when. `limit` sets a queue's rate limit for every worker (`shared.queue_control`). Each
prints one JSON line, as the drivers in common.py do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import benchmarks.systems.ours  # noqa: F401 - registers bench.noop, which the producer checks
from benchmarks.systems.common import BULK_CHUNK, ENGINE_URL


async def _enqueue(n: int, queues: list[str], bulk: bool) -> dict[str, Any]:
    from shared.producer import Producer
    from shared.settings import Settings

    settings = Settings(redis_url=ENGINE_URL)
    per_queue = {q: 0 for q in queues}
    async with Producer.from_settings(settings) as producer:
        started = time.perf_counter()
        if bulk:
            k = len(queues)
            share = [n // k + (1 if i < n % k else 0) for i in range(k)]
            while any(share):
                for i, queue in enumerate(queues):
                    take = min(BULK_CHUNK, share[i])
                    if take:
                        items = [
                            {"type": "bench.noop", "payload": float(i + 1), "queue": queue}
                        ] * take
                        await producer.enqueue_many(items)
                        share[i] -= take
                        per_queue[queue] += take
        else:
            for k in range(n):
                i = k % len(queues)
                await producer.enqueue("bench.noop", float(i + 1), queue=queues[i])
                per_queue[queues[i]] += 1
        seconds = time.perf_counter() - started
    return {"n": n, "seconds": seconds, "per_second": n / seconds, "per_queue": per_queue}


async def _limit(queue: str, tasks: int, per_seconds: float) -> dict[str, Any]:
    from shared.queue_control import QueueLimits, RateLimit, set_limits
    from shared.redis import connect
    from shared.settings import Settings

    settings = Settings(redis_url=ENGINE_URL)
    limits = QueueLimits(rate_limit=RateLimit(tasks=tasks, per_seconds=per_seconds))
    async with connect(settings) as conn:
        config = await set_limits(conn, queue, limits)
    return {"queue": queue, **config.model_dump()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("enqueue")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--queues", required=True, help="comma-separated queue names")
    p.add_argument("--bulk", action="store_true")
    p = sub.add_parser("limit")
    p.add_argument("--queue", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--per-seconds", type=float, default=1.0)
    ns = parser.parse_args(argv)
    if ns.cmd == "enqueue":
        result = asyncio.run(_enqueue(ns.n, ns.queues.split(","), ns.bulk))
    else:
        result = asyncio.run(_limit(ns.queue, ns.tasks, ns.per_seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
