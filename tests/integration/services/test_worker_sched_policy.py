"""WORKER_SCHED_POLICY in a real worker process: "batch" and "normal" hold for every thread
of it, the task threads it starts for plain handlers included; "auto" (the default) runs
the event loop under SCHED_BATCH while the worker drains a backlog and under the normal
policy while it waits for work, so a woken idle worker still preempts to start at once."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from shared import queries, transitions
from shared.models import TaskCreate
from shared.redis import Conn
from shared.registry import TaskType, register
from shared.settings import Settings
from tests.support.service_process import ROOT, Service
from tests.support.waiting import wait_until

PROBE_MODULE = """
import os
from shared.registry import TaskType, register

def in_thread(payload, ctx):  # a plain handler: the worker runs it in a thread of its own
    return {"policy": os.sched_getscheduler(0)}

async def on_loop(payload, ctx):  # a coroutine: the worker's own thread
    return {"policy": os.sched_getscheduler(0)}

register(TaskType("policy.in_thread", handler=in_thread))
register(TaskType("policy.on_loop", handler=on_loop))
"""


def _register_probe_types() -> None:
    """The producer side validates types by name: the same two, with any handler."""
    register(TaskType("policy.in_thread", handler=lambda payload, ctx: None))
    register(TaskType("policy.on_loop", handler=lambda payload, ctx: None))


def _start_worker(settings: Settings, folder: Path, **env: str) -> Service:
    (folder / "policy_probe.py").write_text(textwrap.dedent(PROBE_MODULE))
    return Service(
        "worker",
        settings.redis_url,
        folder,
        PYTHONPATH=f"{ROOT}{os.pathsep}{folder}",
        TASK_MODULES="policy_probe",
        **env,
    )


async def _policies_of_tasks(conn: Conn, settings: Settings, worker: Service) -> list[int]:
    _register_probe_types()
    probes = [TaskCreate(type=name, payload={}) for name in ("policy.in_thread", "policy.on_loop")]
    created, _ = await transitions.enqueue(conn, probes, settings)
    return [await _policy_ran_under(conn, task.id, worker) for task in created]


async def _policy_ran_under(conn: Conn, task_id: str, worker: Service) -> int:
    """Wait for a probe task to complete; the policy its handler reported."""

    async def completed() -> bool:
        return (await queries.get_task(conn, task_id)).status == "completed"

    await wait_until(completed, timeout=30, message=f"{task_id} run: {worker.lines}")
    result = (await queries.get_task(conn, task_id)).result
    assert isinstance(result, dict), result
    return int(result["policy"])


def _thread_policies(pid: int) -> set[int]:
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("batch", os.SCHED_BATCH), ("normal", os.SCHED_OTHER)],
)
async def test_a_worker_and_its_task_threads_run_under_a_fixed_policy(
    conn: Conn, settings: Settings, tmp_path: Path, policy: str, expected: int
) -> None:
    worker = _start_worker(settings, tmp_path, WORKER_SCHED_POLICY=policy)
    try:
        assert await _policies_of_tasks(conn, settings, worker) == [expected, expected]
        assert _thread_policies(worker.process.pid) == {expected}
        assert worker.said(f"scheduling policy: {policy}"), worker.lines
    finally:
        assert worker.stop() == 0, "".join(worker.lines)


async def test_auto_drains_a_backlog_under_batch_and_waits_for_work_under_normal(
    conn: Conn, settings: Settings, tmp_path: Path
) -> None:
    _register_probe_types()
    # The backlog is there before the worker starts: its claims take tasks, none offered.
    backlog, _ = await transitions.enqueue(
        conn, [TaskCreate(type="policy.on_loop", payload={}) for _ in range(40)], settings
    )
    worker = _start_worker(settings, tmp_path, WORKER_CONCURRENCY="2")
    try:
        ran_under = [await _policy_ran_under(conn, task.id, worker) for task in backlog]
        assert ran_under[-10:] == [os.SCHED_BATCH] * 10, ran_under
        # Drained, the worker offers its slots and waits: the loop's thread is normal again,
        # and a task handed over now starts under it.
        await wait_until(
            lambda: os.sched_getscheduler(worker.process.pid) == os.SCHED_OTHER,
            timeout=10,
            message="the idle worker back to the normal policy",
        )
        assert await _policies_of_tasks(conn, settings, worker) == [os.SCHED_OTHER] * 2
        assert worker.said("scheduling policy: auto"), worker.lines
    finally:
        assert worker.stop() == 0, "".join(worker.lines)


async def test_an_unknown_policy_stops_the_worker_at_start_naming_the_setting(
    settings: Settings, tmp_path: Path
) -> None:
    worker = _start_worker(settings, tmp_path, WORKER_SCHED_POLICY="fifo")
    try:
        assert worker.process.wait(60) != 0
        await wait_until(lambda: worker.said("worker_sched_policy"), timeout=10)
        assert worker.said("'batch' or 'normal'"), "".join(worker.lines)
    finally:
        worker.stop()
