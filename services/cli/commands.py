"""The API subcommands of `taskqueue`: each reads its arguments, makes its client calls, prints
the result (output.py) and answers with its exit code."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.cli import output
from shared.client import Client, CreateOptions
from shared.models import Task, TaskStatus

OK, FAILED = 0, 1


class Usage(Exception):
    """Arguments that do not make sense together: exit 2 with the usage."""


def _finished(task: Task, as_json: bool) -> int:
    """Print a final task; 0 when it completed, 1 when it failed or was cancelled."""
    output.emit(task, as_json, output.task_block(task))
    return OK if task.status == TaskStatus.COMPLETED else FAILED


def _payload(args: argparse.Namespace) -> Any:
    if args.payload_file is not None:
        if args.payload is not None:
            raise Usage("give the payload as an argument or with --payload-file, not both")
        try:
            source = args.payload_file
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
            return json.loads(text)
        except (OSError, ValueError) as exc:
            raise Usage(f"--payload-file: {exc}") from exc
    if args.payload is None:
        return None
    try:
        return json.loads(args.payload)
    except ValueError:
        return args.payload  # `taskqueue enqueue email user@example.com`


def _options(args: argparse.Namespace) -> CreateOptions:
    if args.delay is not None and args.scheduled_for is not None:
        raise Usage("--at and --delay exclude each other")
    if args.timeout is not None and not args.wait:
        raise Usage("--timeout needs --wait")
    options = CreateOptions()
    if args.delay is not None:
        options["scheduled_for"] = datetime.now(UTC) + timedelta(seconds=args.delay)
    elif args.scheduled_for is not None:
        options["scheduled_for"] = args.scheduled_for
    for name in (
        "priority",
        "max_retries",
        "webhook",
        "timeout_seconds",
        "queue",
        "unique_key",
        "depends_on",
        "idempotency_key",
    ):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    return options


def enqueue(client: Client, args: argparse.Namespace) -> int:
    payload, options = _payload(args), _options(args)
    task = client.enqueue(args.type, payload, **options)
    if args.wait:
        return _finished(client.wait(task.id, args.timeout), args.json)
    output.emit(task, args.json, f"{task.id} {task.status.value} (queue {task.queue})")
    return OK


def get(client: Client, args: argparse.Namespace) -> int:
    if args.details:
        details = client.details(args.id)
        output.emit(details, args.json, output.details_block(details))
    else:
        task = client.get(args.id)
        output.emit(task, args.json, output.task_block(task))
    return OK


def list_tasks(client: Client, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500 and not args.all:
        raise Usage("--limit must be 1..500")
    filters = {"status": args.status, "type": args.type, "queue": args.queue}
    if args.all:
        if args.cursor is not None:
            raise Usage("--all starts from the newest task: leave out --cursor")
        tasks = list(client.iter_tasks(**filters, page_size=500))
        output.emit(tasks, args.json, output.task_lines(tasks))
        return OK
    page = client.list_tasks(**filters, limit=args.limit, cursor=args.cursor)
    output.emit(page.tasks, args.json, output.task_lines(page.tasks))
    if page.next_cursor and not args.json:
        print(f"(more: --cursor {page.next_cursor}, or --all)", file=sys.stderr)
    return OK


def wait(client: Client, args: argparse.Namespace) -> int:
    return _finished(client.wait(args.id, args.timeout), args.json)


def cancel(client: Client, args: argparse.Namespace) -> int:
    task = client.cancel(args.id)
    how = "cancel requested (it is running)" if task.cancel_requested else task.status.value
    output.emit(task, args.json, f"{task.id} {how}")
    return OK


def retry(client: Client, args: argparse.Namespace) -> int:
    accepted = client.retry(args.id)
    output.emit(accepted, args.json, f"{accepted.task_id} {accepted.status}")
    return OK


def stats(client: Client, args: argparse.Namespace) -> int:
    counts = client.stats(args.queue)
    lines = output.counts_lines(counts)
    lines.append(f"{'workers:':<14}{counts.worker_count}")
    if args.queue is None and counts.queues:
        lines.append(f"{'queues:':<14}{', '.join(sorted(counts.queues))}")
    output.emit(counts, args.json, lines)
    return OK


def queues(client: Client, args: argparse.Namespace) -> int:
    if args.name is None:
        found = client.queues()
        output.emit(found, args.json, output.queue_lines(found))
    else:
        one = client.queue(args.name)
        output.emit(one, args.json, output.queue_lines([one]) + output.counts_lines(one))
    return OK


def pause(client: Client, args: argparse.Namespace) -> int:
    queue = client.pause_queue(args.queue)
    output.emit(queue, args.json, f"queue {queue.name} paused")
    return OK


def resume(client: Client, args: argparse.Namespace) -> int:
    queue = client.resume_queue(args.queue)
    output.emit(queue, args.json, f"queue {queue.name} resumed")
    return OK


def schedules(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.name is not None:
            raise Usage("list takes no name: use `schedules show NAME`")
        found = client.schedules()
        output.emit(found, args.json, output.schedule_lines(found))
        return OK
    if args.name is None:
        raise Usage(f"schedules {args.action} needs a NAME")
    if args.action == "trigger":
        task = client.trigger_schedule(args.name)
        output.emit(task, args.json, f"{task.id} {task.status.value} (fired {args.name})")
    else:
        act = {
            "delete": client.delete_schedule,
            "show": client.schedule,
            "pause": client.pause_schedule,
            "resume": client.resume_schedule,
        }[args.action]
        schedule = act(args.name)
        done = f"schedule {schedule.name} {args.action}d" if args.action != "show" else None
        output.emit(schedule, args.json, [done] if done else output.schedule_lines([schedule]))
    return OK
