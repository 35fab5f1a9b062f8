"""The `taskqueue` command against a live stack (`make run`'s topology): its output for
scripts (`--json`) and people, and its exit codes (SPEC section 13)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import free_port
from tests.support.stack import ROOT, Stack

OK, FAILED, USAGE, NOT_FOUND, UNAVAILABLE, TIMED_OUT = 0, 1, 2, 3, 4, 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack")).start()
    yield running
    running.stop()


def taskqueue(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m services.cli ARGS` (what the console script runs), with TASKQUEUE_URL."""
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})}
    if url is not None:
        environment["TASKQUEUE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stdout.count("\n") == 1, done.stdout  # one line of JSON
    return json.loads(done.stdout)


def url_of(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.api_port}"


def test_enqueue_then_wait_exits_0_with_the_result_as_json(stack: Stack) -> None:
    url = url_of(stack)
    created = taskqueue("--json", "enqueue", "sum", "[1, 2, 3.5]", "--priority", "5", url=url)
    assert created.returncode == OK, created.stderr
    task = as_json(created)
    assert task["type"] == "sum" and task["priority"] == 5 and task["status"] == "pending"

    waited = taskqueue("wait", task["id"], "--timeout", "20", "--json", url=url)
    assert waited.returncode == OK, waited.stderr
    done = as_json(waited)
    assert done["id"] == task["id"] and done["status"] == "completed" and done["result"] == 6.5

    shown = taskqueue("get", task["id"], url=url)  # human output
    assert shown.returncode == OK
    assert "status:           completed" in shown.stdout and "result:           6.5" in shown.stdout
    details = as_json(taskqueue("get", task["id"], "--details", "--json", url=url))
    assert [e["event"] for e in details["events"]][-1] == "task.completed"

    # In one go, a plain-text payload, and the --url option instead of the environment.
    once = taskqueue("--url", url, "enqueue", "checksum", "hello", "--wait", "--json")
    assert once.returncode == OK, once.stderr
    assert as_json(once)["status"] == "completed" and as_json(once)["payload"] == "hello"


def test_a_task_that_fails_exits_1(stack: Stack) -> None:
    url = url_of(stack)
    failing = taskqueue(
        "enqueue",
        "flaky",
        '{"fail_attempts": 5}',
        "--max-retries",
        "0",
        "--wait",
        "--timeout",
        "20",
        "--json",
        url=url,
    )
    assert failing.returncode == FAILED, failing.stderr
    task = as_json(failing)
    assert task["status"] == "failed" and "flaky failure" in task["error"]
    assert taskqueue("wait", task["id"], url=url).returncode == FAILED

    retried = taskqueue("--json", "retry", task["id"], url=url)
    assert retried.returncode == OK and as_json(retried)["status"] == "retrying"

    later = as_json(taskqueue("--json", "enqueue", "sum", "[1]", "--delay", "3600", url=url))
    assert later["status"] == "scheduled"
    cancelled = taskqueue("cancel", later["id"], url=url)
    assert cancelled.returncode == OK and "cancelled" in cancelled.stdout
    assert taskqueue("wait", later["id"], url=url).returncode == FAILED  # cancelled
    # Cancelling it again is refused by the API (409): the action failed.
    again = taskqueue("cancel", later["id"], url=url)
    assert again.returncode == FAILED and "(409)" in again.stderr


def test_unknown_ids_exit_3(stack: Stack) -> None:
    url, unknown = url_of(stack), str(uuid.uuid4())
    for command in ("get", "wait", "cancel", "retry"):
        done = taskqueue(command, unknown, url=url)
        assert done.returncode == NOT_FOUND, (command, done.stderr)
        assert "not found" in done.stderr
    assert taskqueue("queues", "no-such-queue", url=url).returncode == NOT_FOUND
    assert taskqueue("schedules", "show", "no-such-schedule", url=url).returncode == NOT_FOUND
    done = taskqueue("--json", "get", unknown, url=url)
    assert done.stdout == "" and json.loads(done.stderr)["status"] == 404


def test_a_stack_that_is_down_exits_4() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args in (("stats",), ("get", str(uuid.uuid4())), ("enqueue", "sum", "[1]")):
        done = taskqueue(*args, url=nowhere)
        assert done.returncode == UNAVAILABLE, (args, done.stderr)
        assert "cannot reach the API" in done.stderr


def test_bad_usage_exits_2(stack: Stack) -> None:
    url = url_of(stack)
    assert taskqueue(url=url).returncode == USAGE  # no command
    assert taskqueue("frobnicate", url=url).returncode == USAGE
    assert taskqueue("enqueue", url=url).returncode == USAGE  # no type
    assert taskqueue("list", "--status", "lost", url=url).returncode == USAGE
    assert taskqueue("list", "--limit", "0", url=url).returncode == USAGE
    both = taskqueue("enqueue", "sum", "[1]", "--at", "2030-01-01T00:00:00Z", "--delay", "1")
    assert both.returncode == USAGE and "exclude" in both.stderr
    assert taskqueue("schedules", "pause", url=url).returncode == USAGE  # no name
    # The API's 400 (invalid input) is a usage error too, with its message.
    invalid = taskqueue("enqueue", "sum", "[1]", "--priority", "9", url=url)
    assert invalid.returncode == USAGE and "priority" in invalid.stderr
    unknown_type = taskqueue("enqueue", "no-such-type", "1", url=url)
    assert unknown_type.returncode == USAGE and "unknown task type" in unknown_type.stderr
    assert taskqueue("--help").returncode == OK


def test_wait_that_times_out_exits_5(stack: Stack) -> None:
    url = url_of(stack)
    later = as_json(taskqueue("--json", "enqueue", "sum", "[1]", "--delay", "3600", url=url))
    done = taskqueue("wait", later["id"], "--timeout", "0.5", url=url)
    assert done.returncode == TIMED_OUT and "not finished" in done.stderr


def test_stats_queues_pause_resume_list_and_schedules(stack: Stack) -> None:
    url = url_of(stack)
    for n in range(3):
        taskqueue("enqueue", "sum", f"[{n}]", "--queue", "cli-q", "--delay", "3600", url=url)

    stats = as_json(taskqueue("stats", "--json", url=url))
    statuses = "waiting scheduled pending processing retrying completed failed cancelled"
    assert stats["worker_count"] == 3
    assert stats["total_tasks"] == sum(stats[f"{s}_count"] for s in statuses.split())
    one = as_json(taskqueue("stats", "--queue", "cli-q", "--json", url=url))
    assert one["scheduled_count"] == 3
    human = taskqueue("stats", url=url)
    assert human.returncode == OK and "workers:" in human.stdout and "completed:" in human.stdout

    queues = as_json(taskqueue("queues", "--json", url=url))
    assert {"default", "cli-q"} <= {q["name"] for q in queues}
    paused = taskqueue("pause", "cli-q", "--json", url=url)
    assert paused.returncode == OK and as_json(paused)["paused"] is True
    table = taskqueue("queues", url=url).stdout
    assert any(line.startswith("cli-q") and "paused" in line for line in table.splitlines())
    resumed = taskqueue("resume", "cli-q", url=url)
    assert resumed.returncode == OK and resumed.stdout.strip() == "queue cli-q resumed"
    assert as_json(taskqueue("queues", "cli-q", "--json", url=url))["paused"] is False

    listed = as_json(taskqueue("list", "--queue", "cli-q", "--limit", "2", "--json", url=url))
    assert len(listed) == 2 and {t["queue"] for t in listed} == {"cli-q"}
    page = taskqueue("list", "--queue", "cli-q", "--limit", "2", url=url)
    assert "--cursor" in page.stderr and len(page.stdout.splitlines()) == 3  # header + 2
    everything = as_json(taskqueue("list", "--queue", "cli-q", "--all", "--json", url=url))
    assert len(everything) == 3

    schedule = {"interval_seconds": 3600, "task": {"type": "sum", "payload": [1, 2]}}
    put = stack.api.put("/api/schedules/cli-hourly", json=schedule)
    assert put.status_code == 201, put.text
    names = [s["name"] for s in as_json(taskqueue("schedules", "--json", url=url))]
    assert "cli-hourly" in names
    assert "cli-hourly" in taskqueue("schedules", url=url).stdout
    assert as_json(taskqueue("schedules", "pause", "cli-hourly", "--json", url=url))["paused"]
    fired = as_json(taskqueue("schedules", "trigger", "cli-hourly", "--json", url=url))
    assert fired["schedule"] == "cli-hourly"
    deleted = taskqueue("schedules", "delete", "cli-hourly", url=url)
    assert deleted.returncode == OK and "deleted" in deleted.stdout


def test_the_console_script_is_installed_and_reads_its_environment(stack: Stack) -> None:
    script = Path(sys.executable).parent / "taskqueue"
    assert script.exists(), "pip install -e . installs the taskqueue command"
    done = subprocess.run(
        [str(script), "--json", "stats"],
        env={"PATH": "/usr/bin:/bin", "TASKQUEUE_URL": url_of(stack)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == OK, done.stderr
    assert as_json(done)["worker_count"] == 3


def test_worker_and_run_start_the_services_by_exec() -> None:
    """`taskqueue worker` execs `python -m services.worker` with WORKER_QUEUES set: a bad
    selection is refused by the worker's own settings, which proves the exec and the env."""
    done = taskqueue(
        "worker", "--queues", "critical:x", env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    )
    assert done.returncode != OK
    assert "worker_queues" in (done.stderr + done.stdout).lower()
    assert taskqueue("run", "--help").returncode == OK
