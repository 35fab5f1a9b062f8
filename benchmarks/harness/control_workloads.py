"""Issue 14's rows (ours only): how soon a dependent starts once its dependency completed,
and how soon a running task ends once a cancel was asked for.

Both go through the REST API as a user would, against one API process and one worker
process of 16 slots. The times come from the task records (Redis-side milliseconds, one
machine, one clock):

- `dependency_release`: pairs `a -> b`, each created as one batch with refs, at a steady
  pace; the sample is from `a.completed_at` (the complete script's time) to the moment
  b's handler started running (its body pushes its start time, as in the drain rows): the
  release inside complete's script, the hand-over or claim, and the worker's start of it.
- `cancel_running`: a task that hangs (`bench.hang`) is created and, once it is
  `processing`, cancelled with DELETE (202); the sample is from just before the DELETE was
  sent to the task's end as recorded by the transition to `cancelled`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx

from benchmarks.harness import stats
from benchmarks.harness.procs import Group, Proc
from benchmarks.harness.redisd import RedisServer, free_port
from benchmarks.harness.systems import System
from benchmarks.harness.workloads import Outcome, Sizes, read_results, wait_for

# One pair per batch every 5 ms (about 150/s with the request's own time): a steady light
# load, as the enqueue->start latency row has. Bursts measure queueing behind each other.
PAIRS_PER_BATCH = 1
BATCH_PAUSE_SECONDS = 0.005
POLL_SECONDS = 0.002


def control(system: System, server: RedisServer, sizes: Sizes) -> Outcome:
    out = Outcome()
    server.flush()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ours_env = dict(sizes.ours_env)
    with Group(server.url, f"{system.name}-control") as group:
        group.start(
            Proc(
                "api",
                [str(system.python), "-m", "services.api"],
                {"API_PORT": str(port), "BIND_HOST": "127.0.0.1",
                 "TASK_MODULES": "benchmarks.systems.ours", **ours_env},
                system.root,
            )
        )  # fmt: skip
        for worker in system.workers(1, 16):
            group.start(replace(worker, env={**worker.env, **ours_env}))
        with httpx.Client(base_url=base, timeout=30) as client:
            wait_for(lambda: _ok(client, "/api/health"), 60, "api up", poll=0.1)
            release = _dependency_release(client, server, sizes.control_pairs)
            cancel = _cancel_running(client, sizes.control_cancels)
    for metric, values in (("dependency_release", release), ("cancel_running", cancel)):
        config = "1 worker x 16, REST"
        out.add(f"{metric}_p50", config, stats.percentile(values, 50), "ms")
        out.add(f"{metric}_p99", config, stats.percentile(values, 99), "ms")
        out.diagnostics[metric] = {"samples": len(values), "max_ms": max(values)}
    return out


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp() * 1000


def _dependency_release(client: httpx.Client, server: RedisServer, pairs: int) -> list[float]:
    created: list[tuple[str, str]] = []
    while len(created) < pairs:
        items: list[dict[str, Any]] = []
        for i in range(len(created), min(len(created) + PAIRS_PER_BATCH, pairs)):
            # The payload names the pair: bench.noop pushes it with its start time.
            items.append({"ref": f"a{i}", "type": "bench.noop", "payload": -2 * i - 2})
            items.append(
                {"ref": f"b{i}", "type": "bench.noop", "payload": i, "depends_on": [f"a{i}"]}
            )
        answer = client.post("/api/tasks/batch", json={"tasks": items})
        answer.raise_for_status()
        ids = [task["id"] for task in answer.json()["tasks"]]  # in the items' order
        created.extend(zip(ids[0::2], ids[1::2], strict=True))
        time.sleep(BATCH_PAUSE_SECONDS)
    for _, second in created:
        done = _wait_final(client, second)
        assert done["status"] == "completed", done
    started = {int(s.arg): s.at * 1000 for s in read_results(server) if s.arg >= 0}
    samples = []
    for i, (first, _) in enumerate(created):
        dependency = client.get(f"/api/tasks/{first}").json()
        samples.append(started[i] - _ms(dependency["completed_at"]))
    return samples


def _cancel_running(client: httpx.Client, trials: int) -> list[float]:
    samples = []
    for _ in range(trials):
        task = client.post("/api/tasks", json={"type": "bench.hang", "payload": 0}).json()
        path = f"/api/tasks/{task['id']}"
        wait_for(
            lambda: client.get(path).json()["status"] == "processing",  # noqa: B023
            30,
            "the hanging task running",
            poll=POLL_SECONDS,
        )
        asked = time.time() * 1000
        answer = client.delete(path)
        assert answer.status_code == 202, answer.text
        done = _wait_final(client, task["id"])
        assert done["status"] == "cancelled", done
        samples.append(_ms(done["completed_at"] or done["updated_at"]) - asked)
    return samples


def _wait_final(client: httpx.Client, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = client.get(f"/api/tasks/{task_id}").json()
        if task["status"] in ("completed", "failed", "cancelled"):
            return task
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {task['status']} after {timeout}s")
        time.sleep(POLL_SECONDS)
