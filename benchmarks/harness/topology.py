"""The arithmetic of the cluster rows (issue 13): Redis CPU per task per shard, what a CPU
budget allows, and how long a queue took to complete tasks again after a failover.

Pure functions of numbers the workloads read (benchmarks/harness/cluster_workloads.py), so
tests/unit/test_bench_topologies.py checks them without any Redis.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# A completion stamped up to this long after the fault may still have run on the old
# primary: the stall that the recovery ends begins within it (see `recovery_seconds`).
FAULT_GRACE_SECONDS = 0.05


def cpu_us_per_task(before: float, after: float, tasks: int) -> float | None:
    """Microseconds of CPU per task between two readings in seconds (INFO CPU's
    used_cpu_sys + used_cpu_user); None when no task was handled."""
    if tasks <= 0:
        return None
    return (after - before) / tasks * 1e6


def per_shard_us(
    before: Mapping[str, float], after: Mapping[str, float], tasks: Mapping[str, int]
) -> dict[str, float | None]:
    """CPU per task of each shard (keyed by its address): its own CPU over the tasks of the
    queues it holds. A shard missing from `tasks` handled none (None)."""
    return {
        shard: cpu_us_per_task(before[shard], after[shard], tasks.get(shard, 0))
        for shard in sorted(after)
        if shard in before
    }


def ceiling_per_second(us_per_task: Iterable[float | None]) -> float | None:
    """Tasks per second the Redis CPU alone allows with one core per shard and the load
    spread evenly over the shards: the busiest shard saturates first, so it is the number
    of shards times what that shard's budget of 1e6 us/s pays for."""
    costs = list(us_per_task)
    if not costs or any(c is None or c <= 0 for c in costs):
        return None
    worst = max(c for c in costs if c is not None)
    return len(costs) * 1e6 / worst


@dataclass(frozen=True)
class Probe:
    """One reading of the new primary during a failover: when it was sent, whether the node
    answered as a primary, and its queue's `completed` count (one MULTI, so both agree)."""

    at: float
    primary: bool
    completed: int


def recovered_at(probes: Sequence[Probe]) -> float | None:
    """When the queue completed a task on its new primary: the first probe whose count is
    above the count of the first probe that found the node a primary. None if none is.

    Counting only from the promotion on, a completion the old primary ran (even one it
    replicated after the fault) never counts. One that ran between the promotion and the
    first probe as primary is missed, so the figure can be late by a probe interval plus
    the wait for the next completion.
    """
    base: int | None = None
    for probe in probes:
        if not probe.primary:
            continue
        if base is None:
            base = probe.completed
        elif probe.completed > base:
            return probe.at
    return None


def recovery_seconds(
    fault_at: float, completions: Sequence[float], grace: float = FAULT_GRACE_SECONDS
) -> float | None:
    """Seconds from the fault until the queue completes tasks again, judged from the times
    the workers stamped on its completions (a cross-check of `recovered_at`); None if none
    came after the fault.

    The recovery is the end of the longest silence (gap between consecutive completions,
    the last one before the fault included) that begins no later than `grace` after the
    fault and ends after it. A stamp is taken before its call: a completion stamped just
    after the fault may still have run on the old primary (a manual failover pauses it a
    moment later) and must not end the silence; one the failover held and redirected
    carries a time before it ran. With no silence at all the figure is at most `grace`
    plus one ordinary gap.
    """
    ordered = sorted(completions)
    before = [t for t in ordered if t <= fault_at]
    after = [t for t in ordered if t > fault_at]
    if not after:
        return None
    points = [before[-1] if before else fault_at, *after]
    best_gap, best_end = -1.0, after[0]
    for start, end in itertools.pairwise(points):
        if start > fault_at + grace:
            break
        if end - start > best_gap:
            best_gap, best_end = end - start, end
    return best_end - fault_at


@dataclass(frozen=True)
class Refusals:
    """Creates sent in one window, by outcome, for the faulted queue and for the others."""

    refused: int  # 503 on the faulted queue
    failed: int  # any other non-201 on the faulted queue (0: connection error or timeout)
    accepted: int  # 201 on the faulted queue
    others_refused: int  # non-201 on the other queues (one shard down stops only its own)


def refusals(records: Iterable[Sequence[float]], start: float, end: float, queue: int) -> Refusals:
    """Count the creates sent in [start, end). A record is (sent at, queue index, HTTP
    status or 0 for no answer, ...), as benchmarks/harness/steady.py writes it."""
    refused = failed = accepted = others = 0
    for record in records:
        sent, index, status = record[0], int(record[1]), int(record[2])
        if not start <= sent < end:
            continue
        if index != queue:
            others += status != 201
        elif status == 201:
            accepted += 1
        elif status == 503:
            refused += 1
        else:
            failed += 1
    return Refusals(refused, failed, accepted, others)
