"""Issue 15's rows (ours only): how late recurring schedules fire, and what one costs in Redis.

`schedule_lateness`: SCHEDULE_COUNT schedules (1,000 in the full run) each firing every
second, all created at the same instant so every tick of every schedule falls on the same
millisecond (the worst case: a burst of 1,000 due at once each second, as `* * * * * *` cron
would make). One scheduler process (`python -m services.scheduler`) fires them for
SCHEDULE_SECONDS. The sample of a tick is when its `schedule.fired` event (published by the
script that created its task) reached this process, minus the tick's time: the task exists
by then. The first ticks are warm-up and not counted.

`schedule_bytes`: MEMORY USAGE of each schedule's HASH, plus its share of the two index
ZSETs and its fence in the queue's slot, per schedule. Counted with SAMPLES 0: by default
Redis estimates a hash from 5 of its fields, and which 5 depends on the server's random
hash seed, so the same schedules read 1,130 to 1,700 B from one server to the next.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson

from benchmarks.harness import stats
from benchmarks.harness.procs import Group, Proc
from benchmarks.harness.redisd import RedisServer
from benchmarks.harness.systems import System
from benchmarks.harness.workloads import Outcome, Sizes

WARMUP_TICKS_SECONDS = 2.0  # from the scheduler's start: its boot and first passes


def schedules(system: System, server: RedisServer, sizes: Sizes) -> Outcome:
    out = Outcome()
    server.flush()
    count, seconds = sizes.schedule_count, sizes.schedule_seconds
    start_ms = asyncio.run(_create(server.url, count))
    listener = _Listener(server.port)
    counted_from = max(start_ms, time.time() * 1000 + WARMUP_TICKS_SECONDS * 1000)
    with Group(server.url, f"{system.name}-schedules") as group:
        group.start(
            Proc(
                "scheduler",
                [str(system.python), "-m", "services.scheduler"],
                dict(sizes.ours_env),
                system.root,
            )
        )
        listener.run_until(time.monotonic() + seconds + WARMUP_TICKS_SECONDS)
    late: list[float] = []
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    by_tick: dict[int, list[float]] = {}
    for received, event in listener.events():
        key = (event["schedule"], event["tick_ms"])
        duplicates += key in seen
        seen.add(key)
        if event["tick_ms"] >= counted_from:
            late.append(received - event["tick_ms"])
            by_tick.setdefault(event["tick_ms"], []).append(received - event["tick_ms"])
    config = f"{count} schedules x 1/s, 1 scheduler"
    out.add("schedule_lateness_p50", config, stats.percentile(late, 50) if late else None, "ms")
    out.add("schedule_lateness_p99", config, stats.percentile(late, 99) if late else None, "ms")
    ticks = (seconds + WARMUP_TICKS_SECONDS) * count
    out.add("schedule_bytes", f"{count} schedules", bytes_per_schedule(server, count), "B")
    out.diagnostics["schedule_lateness"] = {
        "samples": len(late),
        "max_ms": max(late) if late else None,
        "duplicate_ticks": duplicates,  # must be 0: one task per tick
        "ticks_expected_about": ticks,
        # each tick's earliest and latest task (ms late): a slow pass shows as one tick
        "per_tick_ms": [[round(min(v), 1), round(max(v), 1)] for _, v in sorted(by_tick.items())],
    }
    return out


class _Listener:
    """A bare RESP subscriber to task_events: each chunk read is stamped with this host's
    clock as it arrives and parsed afterwards, so the reader's own work (2,000 messages a
    second) does not add to the lateness it measures."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"SUBSCRIBE task_events\r\n")
        self.sock.settimeout(0.05)
        self.chunks: list[tuple[float, bytes]] = []

    def run_until(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            self.chunks.append((time.time() * 1000, data))
        self.sock.close()

    def events(self) -> list[tuple[float, dict[str, Any]]]:
        """(arrival ms, event) of each schedule.fired, stamped by the chunk that ended it."""
        found, pending = [], b""
        for stamp, data in self.chunks:
            pending += data
            *lines, pending = pending.split(b"\r\n")
            for line in lines:
                if line.startswith(b"{") and b'"schedule.fired"' in line:
                    found.append((stamp, orjson.loads(line)))
        return found


async def _create(url: str, count: int) -> int:
    """Create the schedules with one `now`, so all their ticks coincide; returns it."""
    from shared import schedules
    from shared.redis import connect
    from shared.registry import TaskType, register
    from shared.settings import Settings

    register(TaskType("bench.tick", handler=lambda payload, ctx: None))
    settings = Settings(redis_url=url, _env_file=None)  # type: ignore[call-arg]
    body = schedules.ScheduleBody.model_validate(
        {"interval_seconds": 1, "task": {"type": "bench.tick", "payload": {}, "queue": "ticks"}}
    )
    now = int(time.time() * 1000) + 500
    async with connect(settings) as conn:
        for index in range(count):
            await schedules.put(conn, f"bench-{index:05d}", body, settings, now_ms=now)
    return now + 1000


def bytes_per_schedule(server: RedisServer, count: int) -> float:
    """The bench schedules' bytes in Redis, each key counted whole (not sampled)."""
    from shared import keys
    from shared.keys import Keys

    names = [f"bench-{index:05d}" for index in range(count)]
    total = sum(server.key_memory(keys.schedule(name)) for name in names)
    total += sum(server.key_memory(Keys("ticks").schedule_fence(name)) for name in names)
    total += server.key_memory(keys.SCHEDULES_DUE) + server.key_memory(keys.SCHEDULES_ALL)
    return total / count
