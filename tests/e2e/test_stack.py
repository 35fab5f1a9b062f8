"""The whole stack through the launcher, driven only over HTTP (SPEC sections 2, 3, 6)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.stack import Stack
from tests.support.waiting import wait_until_sync


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack")).start()
    yield running
    running.stop()


def test_every_route_answers(stack: Stack) -> None:
    api = stack.api
    task = stack.create(type="sum", payload=[1, 2, 3.5], priority=4)
    done = stack.wait_status(task["id"], "completed")
    assert done["result"] == 6.5 and done["started_at"] and done["completed_at"]
    assert api.get(f"/tasks/{task['id']}").json()["id"] == task["id"]
    details = api.get(f"/api/tasks/{task['id']}/details").json()
    assert [e["event"] for e in details["events"]] == [
        "task.created",
        "task.claimed",
        "task.completed",
    ]
    assert details["attempts"][0]["outcome"] == "completed" and details["webhook_deliveries"] == []
    batch = api.post("/api/tasks/batch", json={"tasks": [{"type": "checksum", "payload": "a"}] * 3})
    assert batch.status_code == 201 and len(batch.json()["tasks"]) == 3
    listed = api.get("/api/tasks", params={"type": "checksum", "limit": 2})
    assert len(listed.json()) == 2 and listed.headers["X-Next-Cursor"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = stack.create(type="sum", payload=[1], scheduled_for=later)
    assert scheduled["status"] == "scheduled"
    assert api.delete(f"/api/tasks/{scheduled['id']}").json()["status"] == "cancelled"
    assert api.post(f"/api/tasks/{scheduled['id']}/retry").json()["status"] == "retrying"
    stack.wait_status(scheduled["id"], "completed")
    stats = api.get("/api/stats").json()
    assert stats["worker_count"] == 3
    statuses = (
        "pending",
        "processing",
        "completed",
        "failed",
        "scheduled",
        "retrying",
        "cancelled",
    )
    assert stats["total_tasks"] == sum(stats[f"{s}_count"] for s in statuses)
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["services"]["worker"]["instances"] == 3
    assert "taskqueue_tasks_total" in api.get("/metrics").text
    with api.stream("GET", "/api/events") as events:
        lines = events.iter_lines()
        next(lines)
        created = stack.create(type="checksum", payload="x")
        assert any(created["id"] in line for line in _first(lines, 20, "data:"))


def _first(lines: Iterator[str], count: int, prefix: str) -> list[str]:
    found = []
    for line in lines:
        if line.startswith(prefix):
            found.append(line)
            if len(found) == count or "task.created" in line:
                break
    return found


def test_scheduled_task_never_starts_early_and_starts_on_time(stack: Stack) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1.5)
    task = stack.create(type="sum", payload=[1], scheduled_for=due.isoformat())
    done = stack.wait_status(task["id"], "completed")
    started = datetime.fromisoformat(done["started_at"])
    assert started >= due.replace(microsecond=due.microsecond // 1000 * 1000)
    assert (started - due).total_seconds() < 0.5, f"late by {started - due}"


def test_priority_five_overtakes_queued_priority_one(stack: Stack) -> None:
    # 3 workers x 16 slots: 60 three-second tasks keep every slot busy and leave 12 queued
    # (three seconds: the window in which all 48 run must outlast a slow box's polling).
    body = {"tasks": [{"type": "sleep", "payload": {"seconds": 3}, "priority": 1}] * 60}
    with stack.api.stream("GET", "/api/events") as events:
        lines = events.iter_lines()
        next(lines)
        low = {t["id"] for t in stack.api.post("/api/tasks/batch", json=body).json()["tasks"]}
        wait_until_sync(
            lambda: stack.api.get("/api/stats").json()["processing_count"] == 48,
            message="all slots busy",
        )
        urgent = stack.create(type="sleep", payload={"seconds": 0}, priority=5)["id"]
        claims_after_urgent: list[str] = []
        seen_urgent = False
        for line in lines:
            if not line.startswith("data:") or "task.claimed" not in line:
                continue
            task_id = line.split('"task_id":"')[1].split('"')[0]
            seen_urgent = seen_urgent or task_id == urgent
            if task_id == urgent or (
                task_id in low and not seen_urgent and len(claims_after_urgent) < 100
            ):
                claims_after_urgent.append(task_id)
            if seen_urgent:
                break
    backlog_claims_before_urgent = claims_after_urgent[48:-1]
    assert claims_after_urgent[-1] == urgent
    assert backlog_claims_before_urgent == [], (
        "queued priority-1 tasks ran before the priority-5 one"
    )


def test_failing_plugin_fails_after_budget_then_completes_after_manual_retry(stack: Stack) -> None:
    task = stack.create(type="flaky", payload={"fail_attempts": 3}, max_retries=2)
    failed = stack.wait_status(task["id"], "failed")
    assert failed["retry_count"] == 2 and "flaky failure on attempt 3" in failed["error"]
    details = stack.api.get(f"/api/tasks/{task['id']}/details").json()
    assert len(details["attempts"]) == 3
    assert stack.api.post(f"/api/tasks/{task['id']}/retry").status_code == 200
    done = stack.wait_status(task["id"], "completed")
    assert done["result"] == {"succeeded_on_attempt": 4}


INVALID = [
    {"type": "sum"},
    {"type": "teleport", "payload": 1},
    {"type": "sum", "payload": "not numbers"},
    {"type": "sum", "payload": [1], "priority": 9},
    {"type": "sum", "payload": [1], "scheduled_for": "2030-01-01T00:00:00"},
    {"type": "sum", "payload": [1], "webhook": "gopher://x"},
    {"type": "email", "payload": "nobody"},
]


def test_every_invalid_request_is_400_json_and_writes_nothing(stack: Stack) -> None:
    before = stack.api.get("/api/stats").json()["total_tasks"]
    for body in INVALID:
        response = stack.api.post("/api/tasks", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]
    raw = stack.api.post(
        "/api/tasks", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["error"] == "malformed JSON body"
    assert stack.api.get("/api/stats").json()["total_tasks"] == before


def test_sigkilled_worker_task_still_completes_and_worker_comes_back(tmp_path: Path) -> None:
    stack = Stack(tmp_path, TASK_LEASE_SECONDS="30").start()
    try:
        task = stack.create(type="sleep", payload={"seconds": 1.5})
        running = stack.wait_status(task["id"], "processing")
        details = stack.api.get(f"/api/tasks/{task['id']}/details").json()
        name = details["attempts"][-1]["worker"]
        victim = stack.worker_pid(name)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        done = stack.wait_status(task["id"], "completed", timeout=30)
        assert done["id"] == running["id"]
        recovery = time.monotonic() - killed_at
        assert recovery < 30, "recovered by heartbeat loss, well before the 30 s lease"
        attempts = stack.api.get(f"/api/tasks/{task['id']}/details").json()["attempts"]
        assert attempts[0]["outcome"] == "lost" and attempts[-1]["outcome"] == "completed"
        wait_until_sync(lambda: stack.worker_pid(name) != victim, timeout=15, message="restart")
        stack.wait_healthy(3)
    finally:
        stack.stop()


def test_redis_restart_loses_no_acknowledged_task_and_api_answers_503(tmp_path: Path) -> None:
    stack = Stack(tmp_path).start()
    try:
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        ids = [stack.create(type="sum", payload=[i], scheduled_for=later)["id"] for i in range(50)]
        import redis

        client = redis.Redis(port=stack.redis_port)
        pid = int(client.info("server")["process_id"])
        client.close()
        os.kill(pid, signal.SIGKILL)
        down = stack.api.get("/api/stats")
        assert down.status_code == 503 and "redis" in down.json()["error"]
        assert stack.api.get("/api/health").status_code == 503
        stack.wait_healthy(3)
        for task_id in ids:
            assert stack.task(task_id)["status"] == "scheduled"
        after = stack.create(type="sum", payload=[2])
        assert stack.wait_status(after["id"], "completed")["result"] == 2
    finally:
        stack.stop()


def test_ctrl_c_stops_everything_within_10_seconds(tmp_path: Path) -> None:
    stack = Stack(tmp_path).start()
    stack.create(type="sleep", payload={"seconds": 30})
    took = stack.stop(signal.SIGINT)
    assert took < 10
    for port in (stack.api_port, stack.redis_port, stack.smtp_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
