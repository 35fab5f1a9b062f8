"""What the `taskqueue` command prints: JSON for scripts (`--json`), short tables for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

from pydantic import BaseModel

from shared.client import ApiError, Queue, Schedule
from shared.models import QueueStats, Task, TaskDetails, TaskStatus


def to_json(value: Any) -> str:
    """One line of JSON: a model, a list of models, or plain data."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return json.dumps(value, ensure_ascii=False)


def emit(data: Any, as_json: bool, human: str | Iterable[str], out: TextIO | None = None) -> None:
    """Print `data` as JSON, or the human text (a string or lines)."""
    out = out or sys.stdout
    if as_json:
        print(to_json(data), file=out)
    elif isinstance(human, str):
        print(human, file=out)
    else:
        for line in human:
            print(line, file=out)


def error(exc: ApiError | Exception, as_json: bool) -> None:
    """An error on stderr: `{"error", "status", "details"}` with --json, else one line each."""
    message, status, details = str(exc), 0, []
    if isinstance(exc, ApiError):
        message, status, details = exc.message, exc.status, exc.details
    if as_json:
        body = {"error": message, "status": status, "details": details}
        print(json.dumps(body, ensure_ascii=False), file=sys.stderr)
        return
    where = f" ({status})" if status else ""
    print(f"taskqueue: error{where}: {message}", file=sys.stderr)
    for detail in details:
        print(f"  {json.dumps(detail, ensure_ascii=False)}", file=sys.stderr)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else f"{text[:57]}..."


def task_line(task: Task) -> str:
    return (
        f"{task.id}  {task.status.value:<10}  {task.type:<14}  {task.queue:<10}  "
        f"{task.priority:<4}  {_when(task.created_at)}"
    )


def task_lines(tasks: Sequence[Task]) -> list[str]:
    header = f"{'ID':<36}  {'STATUS':<10}  {'TYPE':<14}  {'QUEUE':<10}  PRIO  CREATED (UTC)"
    return [header, *(task_line(t) for t in tasks)] if tasks else ["no tasks"]


def task_block(task: Task) -> list[str]:
    """Every field that has a value, one per line (`result` always)."""
    lines = []
    for name, value in task.model_dump().items():
        if (value is None or value is False or value == []) and name != "result":
            continue
        if name in ("payload", "result"):
            value = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, datetime):
            value = _when(value) + " UTC"
        elif isinstance(value, TaskStatus):
            value = value.value
        lines.append(f"{name + ':':<18}{value}")
    return lines


def details_block(details: TaskDetails) -> list[str]:
    lines = task_block(details.task)
    lines.append("attempts:")
    for a in details.attempts:
        error = f"  {a.error}" if a.error else ""
        lines.append(f"  #{a.number} {_when(a.started_at)} {a.outcome or 'running'}{error}")
    lines.append("events:")
    lines += [f"  {_when(e.at)} {e.event} ({e.status.value})" for e in details.events]
    for label, related in (("depends_on", details.depends_on), ("dependents", details.dependents)):
        if related:
            lines.append(f"{label}:")
            lines += [f"  {r.id} {r.status.value if r.status else 'purged'}" for r in related]
    if details.webhook_deliveries:
        lines.append("webhook deliveries:")
        lines += [
            f"  #{d.attempt} {_when(d.at)} {d.outcome} {d.status_code or d.error or ''}"
            for d in details.webhook_deliveries
        ]
    return lines


def counts_lines(stats: QueueStats) -> list[str]:
    lines = [f"{'total:':<14}{stats.total_tasks}"]
    lines += [f"{name + ':':<14}{count}" for name, count in stats.by_status().items()]
    lines.append(f"{'ready:':<14}{stats.ready_count}")
    depth = ", ".join(f"p{p}={n}" for p, n in sorted(stats.queue_depth_by_priority.items()))
    lines.append(f"{'by priority:':<14}{depth or '-'}")
    return lines


def queue_lines(queues: Sequence[Queue]) -> list[str]:
    if not queues:
        return ["no queues"]
    lines = [f"{'QUEUE':<20} {'STATE':<7} {'READY':>7} {'RUNNING':>7} {'WORKERS':>7}  LIMITS"]
    for q in queues:
        limits = []
        if q.rate_limit:
            limits.append(f"{q.rate_limit.tasks}/{q.rate_limit.per_seconds:g}s")
        if q.max_concurrency is not None:
            limits.append(f"max {q.max_concurrency} running")
        state = "paused" if q.paused else "active"
        lines.append(
            f"{q.name:<20} {state:<7} {q.ready_count:>7} {q.processing_count:>7} "
            f"{q.workers:>7}  {', '.join(limits) or '-'}"
        )
    return lines


def schedule_lines(schedules: Sequence[Schedule]) -> list[str]:
    if not schedules:
        return ["no schedules"]
    lines = [f"{'SCHEDULE':<24} {'RULE':<18} {'STATE':<7} {'NEXT RUN (UTC)':<19}  TASK"]
    for s in schedules:
        rule = s.cron if s.cron is not None else f"every {s.interval_seconds}s"
        state = "paused" if s.paused else "active"
        task = f"{s.task.get('type', '?')} {_compact(s.task.get('payload'))}"
        lines.append(f"{s.name:<24} {rule:<18} {state:<7} {_when(s.next_run_at):<19}  {task}")
    return lines
