"""After the run: drain, then check every acknowledged task, the mail sink and the counters."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import httpx
import redis

from chaos.faults import Fault
from chaos.load import Sent
from shared.keys import Keys

STATUSES = ("pending", "processing", "completed", "failed", "scheduled", "retrying", "cancelled")
ACTIVE = ("pending", "processing", "scheduled", "retrying")
EXPECTED_RUNS = {"flaky": 2, "flaky-fails": 2}  # designed attempts; 1 for the others
QUIET_SECONDS = 10.0  # a drain with no active task this long is over, even if some are gone
ACK_SLACK_SECONDS = 1.0  # a reply the primary sent just before its SIGKILL, still in flight


@dataclass
class Findings:
    acknowledged: int = 0
    replayed: int = 0  # acknowledged by a 200 replay of an earlier, unanswered create
    unacknowledged: int = 0
    final: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    # Acknowledged creates gone with a SIGKILLed primary that had not replicated them (a
    # replicated Redis only). With REDIS_WAIT_REPLICAS=0 this is the loss window, measured;
    # with WAIT on it is a failure like any other loss.
    lost_unreplicated: list[str] = field(default_factory=list)
    wait_replicas: int = 0
    topology: str = "standalone"
    stuck: list[str] = field(default_factory=list)
    wrong_outcome: list[str] = field(default_factory=list)
    lies: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    duplicate_deliveries: int = 0
    duplicates_across_failover: int = 0  # first sent before a failover, again after it
    unattributed_deliveries: int = 0
    extra_runs: int = 0
    tasks_run_twice: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    server_errors: Counter[int] = field(default_factory=Counter)
    server_error_samples: list[str] = field(default_factory=list)
    outage_503: int = 0
    drain_seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def failed(self) -> bool:
        return bool(
            self.lost
            or (self.lost_unreplicated and self.wait_replicas > 0)
            or self.stuck
            or self.lies
            or self.undelivered
            or self.wrong_outcome
            or self.server_errors
            or not self.acknowledged
        )


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def drain(base_url: str, acked: int, timeout: float) -> tuple[bool, dict[str, Any], float]:
    """Wait until no task is active and every acknowledged one is counted, or no task has
    been active for QUIET_SECONDS (some acknowledged ones are gone: the checks say which)."""
    started = time.monotonic()
    stats: dict[str, Any] = {}
    quiet_since: float | None = None
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        while time.monotonic() - started < timeout:
            try:
                stats = (await http.get("/api/stats")).json()
                idle = not sum(stats[f"{s}_count"] for s in ACTIVE)
                if idle and stats["total_tasks"] >= acked:
                    return True, stats, time.monotonic() - started
                quiet_since = (quiet_since or time.monotonic()) if idle else None
                if quiet_since and time.monotonic() - quiet_since >= QUIET_SECONDS:
                    return True, stats, time.monotonic() - started
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.5)
    return False, stats, time.monotonic() - started


async def fetch_details(
    base_url: str, ids: list[str], errors: list[str]
) -> dict[str, dict[str, Any] | None]:
    """Every task's details; a 5xx (recorded in `errors`) is retried a few times."""
    found: dict[str, dict[str, Any] | None] = {}
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:

        async def one(task_id: str) -> None:
            for _ in range(5):
                async with gate:
                    response = await http.get(f"/api/tasks/{task_id}/details")
                if response.status_code in (200, 404):
                    found[task_id] = None if response.status_code == 404 else response.json()
                    return
                errors.append(f"GET details {response.status_code}: {response.text[:300]}")
                await asyncio.sleep(0.5)
            raise RuntimeError(f"details of {task_id}: {errors[-1]}")

        await asyncio.gather(*(one(task_id) for task_id in ids))
    return found


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


def check_task(
    sent: Sent, details: dict[str, Any] | None, f: Findings, client: redis.Redis
) -> None:
    task_id = cast("str", sent.task_id)
    if details is None:
        f.lost.append(f"{task_id} ({sent.type}): gone")
        return
    task, events = details["task"], details["events"]
    status = task["status"]
    if status in ACTIVE:
        (f.stuck if _queued(client, task_id, status, Keys(sent.queue)) else f.lost).append(
            f"{task_id} ({sent.type}): {status}"
        )
        return
    f.final[status] += 1
    if status != sent.expect:
        f.wrong_outcome.append(f"{task_id} ({sent.type}): {status}: {task['error']}")
    completions = sum(1 for e in events if e["event"] == "task.completed")
    if completions > (1 if status == "completed" else 0):
        f.lies.append(f"{task_id}: {completions} completed events")
    wrong_result = sent.expect_result is not None and task["result"] != sent.expect_result
    if status == "completed" and wrong_result:
        f.lies.append(f"{task_id}: result {task['result']!r} != {sent.expect_result!r}")
    claims = sum(1 for e in events if e["event"] == "task.claimed")
    extra = claims - EXPECTED_RUNS.get(sent.type, 1)
    if extra > 0:
        f.extra_runs += extra
        f.tasks_run_twice += 1


def _queued(client: redis.Redis, task_id: str, status: str, keys: Keys) -> bool:
    """Will anything ever move this task? (otherwise it is lost, not just slow)"""
    if status in ("scheduled", "retrying"):
        return client.zscore(keys.delayed, task_id) is not None
    if status == "processing":
        return client.zscore(keys.leases, task_id) is not None
    for lane in ("work", "notify"):
        for priority in range(1, 6):
            if client.lpos(keys.ready(lane, priority), task_id) is not None:
                return True
    return False


def unreplicated_kill(sent: Sent, faults: list[Fault]) -> Fault | None:
    """The primary SIGKILL that took an acknowledged, now gone, create with it: the first
    kill of its queue's primary after the create was acknowledged, before the replica was
    promoted (a later acknowledgement came from the new primary, which keeps it)."""
    at = sent.acknowledged_at or 0.0
    for fault in sorted(faults, key=lambda f: f.at):
        if not fault.kind.startswith("primary-kill") or sent.queue not in fault.queues:
            continue
        latest = min(fault.at + ACK_SLACK_SECONDS, fault.promoted_at or float("inf"))
        if fault.at and at <= latest:
            return fault
    return None


def check_mail(
    sent: list[Sent], statuses: dict[str, str], delivered: Counter[str], f: Findings
) -> None:
    ours = {s.address for s in sent if s.address}
    for s in sent:
        completed = s.task_id is not None and statuses.get(s.task_id) == "completed"
        if s.address and completed and delivered[s.address] == 0:
            f.undelivered.append(f"{s.task_id}: completed, no mail to {s.address}")
    f.duplicate_deliveries = sum(n - 1 for n in delivered.values() if n > 1)
    f.unattributed_deliveries = sum(n for a, n in delivered.items() if a not in ours)


def check_counts(
    stats: dict[str, Any],
    acked: int,
    f: Findings,
    client: redis.Redis,
    queues: list[str] | None = None,
) -> None:
    """The API's stats add up, match what we saw, and match Redis's own indexes (of every
    queue in `queues`, default: the default queue). `acked` excludes what a failover lost."""
    total = stats.get("total_tasks")
    parts = sum(stats.get(f"{s}_count", 0) for s in STATUSES)
    if total != parts:
        f.lies.append(f"stats: total_tasks {total} != sum of statuses {parts}")
    if total != acked:
        f.lies.append(f"stats: total_tasks {total} != acknowledged creates {acked}")
    for status in ("completed", "failed", "cancelled"):
        if stats.get(f"{status}_count") != f.final[status]:
            f.lies.append(
                f"stats: {status}_count {stats.get(f'{status}_count')} != seen {f.final[status]}"
            )
    for queue in queues or ["default"]:
        _check_queue(Keys(queue), f, client, "" if queues is None else f"{queue}: ")


def _check_queue(keys: Keys, f: Findings, client: redis.Redis, label: str) -> None:
    """One queue's counters match its indexes, and nothing is left in it after the drain."""
    counts = cast("dict[str, str]", client.hgetall(keys.counts))
    for status in STATUSES:
        indexed = client.zcard(keys.index_status(status))
        if int(counts.get(status, 0)) != indexed:
            f.lies.append(f"redis: {label}counts[{status}] {counts.get(status)} != index {indexed}")
    if int(counts.get("total", 0)) != client.zcard(keys.index_all):
        f.lies.append(f"redis: {label}counts[total] != index:all")
    leftovers = {
        "leases": client.zcard(keys.leases),
        "delayed": client.zcard(keys.delayed),
        "ready": sum(
            client.llen(keys.ready(lane, p)) for lane in ("work", "notify") for p in range(1, 6)
        ),
    }
    for name, size in leftovers.items():
        if size:
            f.lies.append(f"redis: {label}{size} ids left in {name} after the drain")


def recovery_times(faults: list[Fault], details: dict[str, dict[str, Any] | None]) -> list[float]:
    """For each task a killed consumer held: from the kill to the task's next start."""
    times = []
    for fault in faults:
        if fault.kind not in ("worker", "notifier") or not fault.at:
            continue
        for task_id in fault.held:
            found = details.get(task_id)
            if not found:
                continue
            later = [_at(e) for e in found["events"] if e["event"] == "task.claimed"]
            later = [at for at in later if at > fault.at]
            if later:
                times.append(min(later) - fault.at)
    return times
