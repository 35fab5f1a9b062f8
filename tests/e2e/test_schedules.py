"""Recurring schedules through the whole stack (`make run` topology: api, three worker
processes, scheduler, notifier, dashboard), driven only over HTTP: SPEC section 12. An
every-second schedule PUT over REST has its tasks run, one per tick."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.support.stack import Stack
from tests.support.waiting import wait_until_sync


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("schedules")).start()
    yield running
    running.stop()


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() * 1000


def test_an_every_second_schedule_runs_one_task_per_tick(stack: Stack) -> None:
    api = stack.api
    body = {"interval_seconds": 1, "task": {"type": "sum", "payload": [1, 2], "queue": "ticks"}}
    created = api.put("/api/schedules/every-second", json=body)
    assert created.status_code == 201, created.text
    first_tick = _ms(created.json()["next_run_at"])
    time.sleep(4.5)
    paused = api.post("/api/schedules/every-second/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    last = api.get("/api/schedules/every-second").json()
    ticks = round((_ms(last["last_run_at"]) - first_tick) / 1000)  # ticks fired after the first
    tasks = api.get("/api/tasks", params={"queue": "ticks", "limit": 100}).json()
    assert all(task["schedule"] == "every-second" for task in tasks)
    assert len(tasks) in (ticks + 1, ticks + 2), (ticks, len(tasks))  # last_run_at is a pass's
    assert 4 <= len(tasks) <= 6
    assert last["last_task_id"] in {task["id"] for task in tasks}
    for task in tasks:
        stack.wait_status(task["id"], "completed")
        assert stack.task(task["id"])["result"] == 3
    # Created once per second: consecutive creates are a tick apart, none doubled.
    created_at = sorted(_ms(task["created_at"]) for task in tasks)
    gaps = [b - a for a, b in itertools.pairwise(created_at)]
    assert all(900 <= gap <= 1100 for gap in gaps), gaps

    triggered = api.post("/api/schedules/every-second/trigger")
    assert triggered.status_code == 201 and triggered.json()["schedule"] == "every-second"
    stack.wait_status(triggered.json()["id"], "completed")
    assert api.delete("/api/schedules/every-second").status_code == 200

    def gone() -> bool:
        return bool(api.get("/api/schedules/every-second").status_code == 404)

    wait_until_sync(gone, timeout=2, message="schedule deleted")
