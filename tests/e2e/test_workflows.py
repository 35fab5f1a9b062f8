"""Task graphs through the whole stack (`make run` topology: api, three worker processes,
scheduler, notifier, dashboard), driven only over HTTP: SPEC section 11."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("workflows")).start()
    yield running
    running.stop()


def _at(task: dict[str, object], field: str) -> datetime:
    return datetime.fromisoformat(str(task[field]))


def test_a_graph_created_over_rest_runs_in_order_with_its_results(stack: Stack) -> None:
    # extract -> (left, right) -> load -> report: a fan-out, a fan-in, then a chain.
    body = {
        "tasks": [
            {"type": "sleep", "payload": {"seconds": 0.3}, "ref": "extract"},
            {"type": "sum_after", "payload": [10], "ref": "left", "depends_on": ["extract"]},
            {"type": "sum_after", "payload": [100], "ref": "right", "depends_on": ["extract"]},
            {"type": "sum_after", "payload": [1], "ref": "load", "depends_on": ["left", "right"]},
            {"type": "sum_after", "payload": [0], "ref": "report", "depends_on": ["load"]},
        ]
    }
    answer = stack.api.post("/api/tasks/batch", json=body)
    assert answer.status_code == 201, answer.text
    refs = answer.json()["refs"]
    assert set(refs) == {"extract", "left", "right", "load", "report"}
    done = {ref: stack.wait_status(task_id, "completed") for ref, task_id in refs.items()}
    for before, after in [
        ("extract", "left"),
        ("extract", "right"),
        ("left", "load"),
        ("right", "load"),
        ("load", "report"),
    ]:
        assert _at(done[after], "started_at") >= _at(done[before], "completed_at"), after
    assert [done[r]["result"] for r in ("left", "right", "load", "report")] == [10, 100, 111, 111]
    details = stack.api.get(f"/api/tasks/{refs['load']}/details").json()
    assert [(d["id"], d["status"]) for d in details["depends_on"]] == [
        (refs["left"], "completed"),
        (refs["right"], "completed"),
    ]
    assert [d["id"] for d in details["dependents"]] == [refs["report"]]
    stats = stack.api.get("/api/stats").json()
    assert stats["waiting_count"] == 0


def test_a_cancelled_root_cancels_the_graph_below_it(stack: Stack) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    root = stack.create(type="sum", payload=[1], scheduled_for=later)
    child = stack.create(type="sum", payload=[2], depends_on=[root["id"]])
    grandchild = stack.create(type="sum", payload=[3], depends_on=[child["id"]])
    assert child["status"] == grandchild["status"] == "waiting"
    assert stack.api.get("/api/stats").json()["waiting_count"] == 2
    assert stack.api.delete(f"/api/tasks/{root['id']}").status_code == 200
    assert stack.task(child["id"])["error"] == f"dependency {root['id']} was cancelled"
    assert stack.task(grandchild["id"])["error"] == f"dependency {child['id']} was cancelled"
    before = stack.api.get("/api/stats").json()["total_tasks"]
    for depends_on, status in (
        (["3f1c9d2e-0000-4000-8000-00000000abcd"], 404),
        (["no-such-ref"], 400),
    ):
        refused = stack.api.post(
            "/api/tasks", json={"type": "sum", "payload": [1], "depends_on": depends_on}
        )
        assert refused.status_code == status and refused.json()["error"]
    assert stack.api.get("/api/stats").json()["total_tasks"] == before


def test_a_fan_in_of_1000_over_rest_runs_its_join_after_all_of_them(stack: Stack) -> None:
    """Issue 14's fan-in through the stack: 1,000 tasks in one batch, then a join naming all
    1,000 (MAX_DEPENDENCIES) in a second create; it waits, starts after the last of them has
    completed, and sees every result."""
    leaves = stack.api.post(
        "/api/tasks/batch",
        json={"tasks": [{"type": "sum", "payload": [n]} for n in range(1000)]},
    )
    assert leaves.status_code == 201, leaves.text
    ids = [task["id"] for task in leaves.json()["tasks"]]
    join = stack.create(type="sum_after", payload=[0], depends_on=ids)
    assert join["status"] in ("waiting", "pending")  # pending: all 1,000 already ran
    done = stack.wait_status(join["id"], "completed", timeout=120)
    assert done["result"] == sum(range(1000))
    last = max(_at(stack.task(task_id), "completed_at") for task_id in ids)
    assert _at(done, "started_at") >= last
    details = stack.api.get(f"/api/tasks/{join['id']}/details").json()
    assert len(details["depends_on"]) == 1000
    assert {d["status"] for d in details["depends_on"]} == {"completed"}
