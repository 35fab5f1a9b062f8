"""`make run`'s topology on a Sentinel-watched Redis, through HTTP only: the primary is
SIGKILLed under load with REDIS_WAIT_REPLICAS=1, and no acknowledged create is lost
(SPEC section 8)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.load import Load
from tests.support.redis_sentinel import SentinelSetup, run_sentinel
from tests.support.stack import Stack
from tests.support.waiting import wait_until_sync


@pytest.fixture
def sentinel_stack(tmp_path: Path) -> Iterator[tuple[Stack, SentinelSetup]]:
    with run_sentinel() as setup:
        stack = Stack(
            tmp_path,
            REDIS_URL=setup.url,
            REDIS_WAIT_REPLICAS="1",
            REDIS_WAIT_TIMEOUT_MS="500",
        )
        try:
            yield stack.start(), setup
        finally:
            stack.stop()


def test_primary_sigkilled_under_load_loses_no_acknowledged_create(
    sentinel_stack: tuple[Stack, SentinelSetup],
) -> None:
    stack, setup = sentinel_stack
    with Load(f"http://127.0.0.1:{stack.api_port}") as load:
        wait_until_sync(lambda: len(load.acknowledged) >= 40, message="40 creates before")
        old = setup.kill_primary()
        setup.wait_failover()
        setup.restart(old)  # back as a replica: WAIT 1 can be met again
        before_kill_and_after = len(load.acknowledged) + 40
        wait_until_sync(
            lambda: len(load.acknowledged) >= before_kill_and_after,
            timeout=60,
            message="40 creates after the failover",
        )
    assert not load.unexpected, load.unexpected
    acknowledged = [a.task_id for a in load.acknowledged]
    assert len(set(acknowledged)) == len(acknowledged)
    assert load.refused > 0  # the client did see the failover (503s, dropped connections)

    def all_done() -> bool:
        for task_id in acknowledged:
            response = stack.api.get(f"/api/tasks/{task_id}")
            assert response.status_code != 404, f"acknowledged task {task_id} was lost"
            if response.status_code != 200 or response.json()["status"] != "completed":
                return False
        return True

    wait_until_sync(all_done, timeout=60, message="every acknowledged task completed")
    stats = stack.api.get("/api/stats").json()
    assert stats["total_tasks"] == stats["completed_count"] >= len(acknowledged)
