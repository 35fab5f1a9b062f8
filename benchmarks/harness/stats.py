"""Small statistics helpers: percentiles, medians, parsing what the task bodies pushed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Start:
    arg: float  # the task's argument: send time, due time, or -1 (warm-up)
    at: float  # when the task body started (time.time())
    pid: int


def parse(entries: Sequence[str]) -> list[Start]:
    out = []
    for entry in entries:
        arg, at, pid = entry.split()
        out.append(Start(float(arg), float(at), int(pid)))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def drain_rate(starts: Sequence[Start]) -> tuple[float, int]:
    """Tasks/s once every worker process has started working (its warm-up excluded).

    The window opens at the first start of the last process to begin and closes at the last
    start; returns (rate, tasks in the window).
    """
    first_by_pid: dict[int, float] = {}
    for s in starts:
        first_by_pid[s.pid] = min(first_by_pid.get(s.pid, s.at), s.at)
    opened = max(first_by_pid.values())
    times = sorted(s.at for s in starts if s.at >= opened)
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0, len(times)
    return (len(times) - 1) / (times[-1] - times[0]), len(times)
