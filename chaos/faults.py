"""A seeded schedule of faults, and running it against the stack (in a thread: it blocks)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chaos.stack import RedisProcess, held_tasks, live_instances

REDIS_DOWN_SECONDS = 1.5  # how long Redis stays away before it is started again


@dataclass
class Fault:
    kind: str  # worker | notifier | scheduler | redis-shutdown | redis-kill
    planned: float  # seconds after the load started
    at: float = 0.0  # wall time it happened
    target: str = ""
    pid: int | None = None
    held: list[str] = field(default_factory=list)
    back_at: float | None = None  # redis: when it answered again
    note: str = ""


def schedule(seconds: float, seed: int, smoke: bool = False) -> list[Fault]:
    """Faults spread over the middle 80% of the run, at least one slot apart, kinds shuffled;
    the SHUTDOWN restart of Redis comes before the SIGKILL one."""
    rng = random.Random(seed * 7919 + 1)
    if smoke:
        kinds = ["worker", "worker", "notifier", "scheduler", "redis-kill"]
    else:
        kinds = ["worker"] * max(2, int(seconds // 20))
        kinds += ["notifier"] * max(1, int(seconds // 60))
        kinds += ["scheduler"] * max(1, int(seconds // 60))
        kinds += ["redis-shutdown", "redis-kill"]
    rng.shuffle(kinds)
    redis_slots = [i for i, kind in enumerate(kinds) if kind.startswith("redis")]
    order = ["redis-kill"] if smoke else ["redis-shutdown", "redis-kill"]
    for i, kind in zip(redis_slots, order, strict=True):
        kinds[i] = kind
    slot = seconds * 0.8 / len(kinds)
    return [
        Fault(kind, seconds * 0.1 + (i + rng.uniform(0, 0.4)) * slot)
        for i, kind in enumerate(kinds)
    ]


@dataclass
class FaultRunner:
    redis: RedisProcess
    faults: list[Fault]
    seed: int
    dead_after: float = 4.0
    errors: list[str] = field(default_factory=list)

    def run(self, started: float, stop: threading.Event) -> None:
        rng = random.Random(self.seed * 104729 + 3)
        for fault in self.faults:
            if stop.wait(max(0.0, started + fault.planned - time.monotonic())):
                return
            try:
                self._inject(fault, rng)
            except Exception as exc:  # a fault that could not be injected is reported
                fault.note = f"not injected: {exc}"
                self.errors.append(f"{fault.kind}: {exc}")

    def _inject(self, fault: Fault, rng: random.Random) -> None:
        if fault.kind.startswith("redis"):
            self._restart_redis(fault)
        else:
            self._kill(fault, rng)

    def _kill(self, fault: Fault, rng: random.Random) -> None:
        with self.redis.client() as client:
            live = live_instances(client, fault.kind, self.dead_after)
            busy = [i for i in live if held_tasks(client, i["instance_id"])]
            victim = rng.choice(busy or live) if live else None
            if victim is None:
                raise RuntimeError(f"no live {fault.kind}")
            fault.at, fault.target, fault.pid = time.time(), victim["instance_id"], victim["pid"]
            os.kill(int(victim["pid"]), signal.SIGKILL)
            fault.held = held_tasks(client, fault.target)  # frozen: its owner is gone

    def _restart_redis(self, fault: Fault) -> None:
        fault.at, fault.target = time.time(), "redis"
        if fault.kind == "redis-shutdown":
            self.redis.shutdown()
        else:
            self.redis.kill()
        time.sleep(REDIS_DOWN_SECONDS)
        self.redis.start()
        fault.back_at = time.time()


def outage_windows(faults: list[Fault], grace: float = 3.0) -> list[tuple[float, float]]:
    """When Redis was away (plus a grace for clients to reconnect): 503 is the right answer."""
    return [
        (f.at, (f.back_at or f.at) + grace) for f in faults if f.kind.startswith("redis") and f.at
    ]


def during_outage(moment: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= moment <= end for start, end in windows)


def describe(faults: list[Fault]) -> list[dict[str, Any]]:
    return [
        {
            "kind": f.kind,
            "planned_s": round(f.planned, 1),
            "target": f.target,
            "held_tasks": len(f.held),
            "down_s": round(f.back_at - f.at, 2) if f.back_at else None,
            "note": f.note,
        }
        for f in faults
    ]
