"""Named queues through the whole stack (`make run` topology: api, three worker processes,
scheduler, notifier, dashboard), driven only over HTTP: SPEC section 9."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.support.stack import Stack
from tests.support.waiting import wait_until_sync


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("queues")).start()
    yield running
    running.stop()


def _started(task: dict[str, object]) -> float:
    return datetime.fromisoformat(str(task["started_at"])).timestamp()


def test_a_paused_queue_waits_while_another_runs_and_starts_at_once_on_resume(
    stack: Stack,
) -> None:
    api = stack.api
    paused = api.post("/api/queues/mail/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    held = [stack.create(type="sum", payload=[n], queue="mail") for n in range(3)]
    other = [stack.create(type="sum", payload=[n], queue="reports") for n in range(3)]
    for task in other:
        stack.wait_status(task["id"], "completed")
    assert {stack.task(t["id"])["status"] for t in held} == {"pending"}
    assert api.get("/api/queues/mail").json()["ready_count"] == 3
    resumed_at = time.time()
    assert api.post("/api/queues/mail/resume").json()["paused"] is False
    done = [stack.wait_status(t["id"], "completed") for t in held]
    # Started within 100 ms of the resume (clocks are this host's: one machine).
    assert max(_started(t) for t in done) - resumed_at < 0.1
    assert api.get("/api/queues/mail").json()["completed_count"] == 3

    def all_three_serve_mail() -> bool:  # `*` picks a new queue up within a beat or two
        queues = {q["name"]: q for q in api.get("/api/queues").json()}
        return bool(queues["mail"]["workers"] == 3)

    wait_until_sync(all_three_serve_mail, timeout=20, message="three workers serving mail")


def test_limits_hold_across_three_worker_processes(stack: Stack) -> None:
    api = stack.api
    limits = {"rate_limit": {"tasks": 10, "per_seconds": 1}, "max_concurrency": 2}
    answer = api.put("/api/queues/sms/limits", json=limits)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rate_limit"] == {"tasks": 10, "per_seconds": 1.0}
    batch = api.post(
        "/api/tasks/batch",
        json={"tasks": [{"type": "sum", "payload": [n], "queue": "sms"} for n in range(15)]},
    )
    assert batch.status_code == 201
    done = [stack.wait_status(t["id"], "completed", timeout=30) for t in batch.json()["tasks"]]
    starts = sorted(_started(t) for t in done)
    # One start every 100 ms whoever runs it: 15 starts span at least 1.4 s.
    assert starts[-1] - starts[0] >= 1.3
    for i in range(len(starts)):
        assert sum(1 for s in starts[i:] if s - starts[i] < 0.95) <= 10


def test_queue_names_and_limits_out_of_range_are_400_and_change_nothing(stack: Stack) -> None:
    api = stack.api
    for bad in (
        {"max_concurrency": 0},
        {"rate_limit": {"tasks": 0, "per_seconds": 1}},
        {"rate_limit": {"tasks": 1}},
        {"max_concurrency": 1, "extra": 1},
    ):
        answer = api.put("/api/queues/limited/limits", json=bad)
        assert answer.status_code == 400 and answer.json()["error"], (bad, answer.text)
    assert api.get("/api/queues/limited").status_code == 404
    assert api.post("/api/queues/Not-Valid/pause").status_code in (400, 404)
    assert (
        api.post("/api/tasks", json={"type": "sum", "payload": [1], "queue": "A"}).status_code
        == 400
    )
    wait_until_sync(lambda: api.get("/api/health").json()["status"] == "ok", message="health")
