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
from chaos.stack import PREFIX

STATUSES = ("pending", "processing", "completed", "failed", "scheduled", "retrying", "cancelled")
ACTIVE = ("pending", "processing", "scheduled", "retrying")
EXPECTED_RUNS = {"flaky": 2, "flaky-fails": 2}  # designed attempts; 1 for the others


@dataclass
class Findings:
    acknowledged: int = 0
    replayed: int = 0  # acknowledged by a 200 replay of an earlier, unanswered create
    unacknowledged: int = 0
    final: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    wrong_outcome: list[str] = field(default_factory=list)
    lies: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    duplicate_deliveries: int = 0
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
    """Wait until no task is active and every acknowledged one is counted."""
    started = time.monotonic()
    stats: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        while time.monotonic() - started < timeout:
            try:
                stats = (await http.get("/api/stats")).json()
                if stats["total_tasks"] >= acked and not sum(stats[f"{s}_count"] for s in ACTIVE):
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
        (f.stuck if _queued(client, task_id, status) else f.lost).append(
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


def _queued(client: redis.Redis, task_id: str, status: str) -> bool:
    """Will anything ever move this task? (otherwise it is lost, not just slow)"""
    if status in ("scheduled", "retrying"):
        return client.zscore(f"{PREFIX}delayed", task_id) is not None
    if status == "processing":
        return client.zscore(f"{PREFIX}leases", task_id) is not None
    for lane in ("work", "notify"):
        for priority in range(1, 6):
            if client.lpos(f"{PREFIX}ready:{lane}:{priority}", task_id) is not None:
                return True
    return False


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


def check_counts(stats: dict[str, Any], acked: int, f: Findings, client: redis.Redis) -> None:
    """The API's stats add up, match what we saw, and match Redis's own indexes."""
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
    counts = cast("dict[str, str]", client.hgetall(f"{PREFIX}counts"))
    for status in STATUSES:
        indexed = client.zcard(f"{PREFIX}index:{status}")
        if int(counts.get(status, 0)) != indexed:
            f.lies.append(f"redis: counts[{status}] {counts.get(status)} != index {indexed}")
    if int(counts.get("total", 0)) != client.zcard(f"{PREFIX}index:all"):
        f.lies.append("redis: counts[total] != index:all")
    leftovers = {
        "leases": client.zcard(f"{PREFIX}leases"),
        "delayed": client.zcard(f"{PREFIX}delayed"),
        "ready": sum(
            client.llen(f"{PREFIX}ready:{lane}:{p}")
            for lane in ("work", "notify")
            for p in range(1, 6)
        ),
    }
    for name, size in leftovers.items():
        if size:
            f.lies.append(f"redis: {size} ids left in {name} after the drain")


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
