"""A seeded schedule of faults, and running it against the stack (in a thread: it blocks)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from chaos.stack import held_tasks, live_instances

REDIS_DOWN_SECONDS = 1.5  # how long Redis stays away before it is started again
SERVICES = ("worker", "notifier", "scheduler")
# Faults of a replicated Redis (chaos/topology.py), in the order a run injects them.
CLUSTER_FAULTS = ["failover", "primary-kill", "failover-global", "primary-kill-partitioned"]
SENTINEL_FAULTS = ["primary-kill", "primary-kill-partitioned", "primary-kill"]
SMOKE_FAULTS = {
    "standalone": ["redis-kill"],
    "cluster": ["failover", "primary-kill"],
    "sentinel": ["primary-kill"],
}


@dataclass
class Fault:
    # worker | notifier | scheduler | redis-shutdown | redis-kill (standalone) | failover |
    # failover-global (cluster) | primary-kill | primary-kill-partitioned (cluster, sentinel)
    kind: str
    planned: float  # seconds after the load started
    at: float = 0.0  # wall time it happened (a primary kill: the SIGKILL)
    target: str = ""
    pid: int | None = None
    held: list[str] = field(default_factory=list)
    back_at: float | None = None  # redis: when it answered again (a primary: back as a replica)
    note: str = ""
    # Replicated Redis only (chaos/topology.py):
    queues: list[str] = field(default_factory=list)  # the queues on the failed primary
    cut_at: float | None = None  # primary-kill-partitioned: when its replica was cut off
    promoted_at: float | None = None  # when the harness saw the replica answer ROLE master
    unreplicated_bytes: int | None = None  # primary's offset minus its replica's, at the kill
    lost: int = 0  # acknowledged creates gone with this primary (filled in by the check)
    acked_unreplicated: int = 0  # creates acknowledged while the replica was cut off
    writes_gap: float | None = None  # longest pause between acknowledged creates on `queues`

    @property
    def is_redis(self) -> bool:
        return self.kind not in SERVICES


class Engine(Protocol):
    """The Redis under test as the fault runner sees it (chaos/topology.py)."""

    queues: list[str]

    def client(self) -> Any: ...

    def inject(self, fault: Fault, rng: random.Random) -> None: ...


def schedule(
    seconds: float, seed: int, smoke: bool = False, topology: str = "standalone"
) -> list[Fault]:
    """Faults spread over the middle 80% of the run, at least one slot apart, kinds shuffled;
    the Redis faults keep their order (standalone: the SHUTDOWN restart before the SIGKILL
    one; see CLUSTER_FAULTS and SENTINEL_FAULTS)."""
    rng = random.Random(seed * 7919 + 1)
    if smoke:
        kinds = ["worker", "worker", "notifier", "scheduler", "redis-kill"]
        if topology == "cluster":  # a shorter smoke: the cluster itself takes longer to start
            kinds = ["worker", "failover", "worker", "primary-kill"]
        elif topology == "sentinel":
            kinds = ["worker", "notifier", "primary-kill"]
        order = SMOKE_FAULTS[topology]
    elif topology == "standalone":
        kinds = ["worker"] * max(2, int(seconds // 20))
        kinds += ["notifier"] * max(1, int(seconds // 60))
        kinds += ["scheduler"] * max(1, int(seconds // 60))
        order = ["redis-shutdown", "redis-kill"]
        kinds += order
    else:  # fewer service kills: a failover takes longer than a Redis restart
        kinds = ["worker"] * max(2, int(seconds // 30)) + ["notifier", "scheduler"]
        order = CLUSTER_FAULTS if topology == "cluster" else SENTINEL_FAULTS
        kinds += order
    rng.shuffle(kinds)
    redis_slots = [i for i, kind in enumerate(kinds) if kind not in SERVICES]
    for i, kind in zip(redis_slots, order, strict=True):
        kinds[i] = kind
    slot = seconds * 0.8 / len(kinds)
    return [
        Fault(kind, seconds * 0.1 + (i + rng.uniform(0, 0.4)) * slot)
        for i, kind in enumerate(kinds)
    ]


@dataclass
class FaultRunner:
    redis: Engine
    faults: list[Fault]
    seed: int
    dead_after: float = 4.0
    errors: list[str] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids whose heartbeats may still look live

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
        if fault.is_redis:
            self.redis.inject(fault, rng)
        else:
            self._kill(fault, rng)

    def _kill(self, fault: Fault, rng: random.Random) -> None:
        queues = list(self.redis.queues)  # [] : the default queue
        for attempt in range(5):  # a replicated Redis may be failing over right now
            try:
                with self.redis.client() as client:
                    live = live_instances(client, fault.kind, self.dead_after)
                    live = [i for i in live if int(i["pid"]) not in self.killed]
                    busy = [i for i in live if held_tasks(client, i["instance_id"], queues)]
                    victim = rng.choice(busy or live) if live else None
                    if victim is None:
                        raise RuntimeError(f"no live {fault.kind}")
                    fault.at, fault.target = time.time(), victim["instance_id"]
                    fault.pid = victim["pid"]
                    os.kill(int(victim["pid"]), signal.SIGKILL)
                    self.killed.add(int(victim["pid"]))
                    # frozen: its owner is gone
                    fault.held = held_tasks(client, fault.target, queues)
                    return
            except Exception:
                if fault.at or attempt == 4:
                    raise
                time.sleep(1.0)


def outage_windows(faults: list[Fault], grace: float = 3.0) -> list[tuple[float, float]]:
    """When Redis (or one primary) was away or cut off from its replica, plus a grace for
    clients to reconnect: 503 is the right answer then."""
    return [(f.cut_at or f.at, (f.back_at or f.at) + grace) for f in faults if f.is_redis and f.at]


def during_outage(moment: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= moment <= end for start, end in windows)


def describe(faults: list[Fault]) -> list[dict[str, Any]]:
    described = []
    for f in faults:
        row: dict[str, Any] = {
            "kind": f.kind,
            "planned_s": round(f.planned, 1),
            "target": f.target,
            "held_tasks": len(f.held),
            "down_s": round(f.back_at - f.at, 2) if f.back_at else None,
            "note": f.note,
        }
        if f.kind.startswith(("primary", "failover")):
            row |= {
                "queues": f.queues,
                "cut_off_s": round(f.at - f.cut_at, 2) if f.cut_at and f.at else None,
                "promoted_after_s": round(f.promoted_at - f.at, 2) if f.promoted_at else None,
                "unreplicated_bytes_at_kill": f.unreplicated_bytes,
                "creates_acknowledged_while_cut_off": f.acked_unreplicated,
                "acknowledged_creates_lost": f.lost,
                "longest_gap_between_acknowledged_creates_s": (
                    round(f.writes_gap, 2) if f.writes_gap is not None else None
                ),
            }
        described.append(row)
    return described
