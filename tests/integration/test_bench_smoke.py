"""The benchmark harness at tiny sizes, ours only, so that `make bench` cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_bench_smoke_runs_every_workload_and_writes_the_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    env["BENCH_LOG_DIR"] = str(tmp_path / "logs")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| metric | unit | ours |" in done.stdout
    document = json.loads((tmp_path / "smoke.json").read_text())
    rows = {row["metric"]: row for row in document["rows"] if row["system"] == "ours"}
    expected = {
        "drain_high", "drain_3x1", "latency_p99", "lateness_p99", "enqueue", "enqueue_bulk",
        "memory_queued", "memory_finished", "rest_single", "rest_batch", "recovery_p99",
        "drain_queues", "drain_queues_ratio", "rate_limited", "dependency_release_p50",
        "dependency_release_p99", "cancel_running_p50", "cancel_running_p99",
        "worker_cpu_3x1", "redis_cpu_3x1", "worker_cpu_high", "redis_cpu_high",
    }  # fmt: skip
    assert expected | {"cores_busy_3x1", "cores_busy_high"} <= set(rows), sorted(rows)
    for name in expected:
        row = rows[name]
        assert {"system", "metric", "config", "median", "min", "max", "unit"} <= set(row)
        assert row["median"] is not None and row["median"] > 0, row
    # Cores busy during a drain: a share of this machine's cores, never more (a smoke drain
    # can end within one 10 ms tick of /proc/stat, so none busy is possible here).
    for name in ("cores_busy_3x1", "cores_busy_high"):
        assert rows[name]["unit"] == "cores"
        assert 0 <= rows[name]["min"] <= rows[name]["max"] <= document["machine"]["cores"]
    diagnostics = document["diagnostics"]
    [live] = [d for d in diagnostics if (d["system"], d["workload"]) == ("ours", "live")]
    quiet = live["cpu_at_rate_us_per_task"]  # what a task costs at the latency row's rate
    assert quiet["workers"] > 0 and quiet["redis"] > 0, quiet
    assert document["machine"]["cores"] and document["versions"]["ours"]
    assert (tmp_path / "smoke.md").read_text().startswith("# Benchmark results")


@pytest.mark.timeout(120)
def test_drain_cost_reports_the_rate_the_cpu_and_the_commands_per_task() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness.drain_cost", "--n", "600",
         "--processes", "1", "--concurrency", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, box, per_task, *commands = done.stdout.splitlines()
    assert first.startswith("ours 1 x 1: ") and "worker CPU" in first and "Redis CPU" in first
    # How much of the box the drain kept busy: idle cores point at waits, not at CPU.
    busy = re.match(r"the box: ([\d.]+) of (\d+) cores busy, ", box)
    assert busy is not None, box
    assert 0 < float(busy[1]) <= int(busy[2]), box
    assert box.endswith(" context switches per task") and "% idle over the drain" in box, box
    # A single-slot worker's call: the report, the claim and the task body's own RPUSH.
    assert float(per_task.rsplit(" ", 1)[1]) > 10
    assert any(line.split()[0] == "fcall" for line in commands), commands


def test_script_cost_times_complete_claim_as_a_single_slot_worker_runs_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness.script_cost", "--iterations", "200",
         "--reps", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    # It exits non-zero when the loop did not report and claim one task per iteration.
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = done.stdout.strip()
    assert line.startswith("complete_claim, one task reported and one claimed"), line
    assert float(line.rsplit("min ", 1)[1].rstrip(" us)")) > 1


def test_the_cpu_window_opens_once_every_worker_process_has_started_a_task() -> None:
    from benchmarks.harness import workloads
    from benchmarks.harness.redisd import fresh_redis

    with fresh_redis() as server:
        # Three tasks started by process 11, then two by process 12: with two worker
        # processes the window opens now, after the five starts seen so far.
        server.client.rpush(workloads.RESULTS_KEY, "1 1.0 11", "1 1.1 11", "1 1.2 11")
        server.client.rpush(workloads.RESULTS_KEY, "1 1.3 12", "1 1.4 12")
        assert workloads._at_work(server, 2, 20, timeout=5) == 5
        # Out of 8 tasks, the second process came in after more than half: no window.
        assert workloads._at_work(server, 2, 8, timeout=5) is None
        # A process that never starts one: the drain's budget runs out.
        with pytest.raises(TimeoutError):
            workloads._at_work(server, 3, 20, timeout=0.2)


def test_schedule_bytes_count_every_field_of_a_schedule_not_a_sample() -> None:
    from benchmarks.harness.redisd import fresh_redis
    from benchmarks.harness.schedule_workloads import bytes_per_schedule
    from shared import keys

    with fresh_redis() as server:
        # Ten fields, one of them large: an estimate from 5 sampled fields counts the large
        # one twice or not at all (which, depends on the server's hash seed).
        names = [f"bench-{index:05d}" for index in range(3)]
        for name in names:
            fields = {f"field{n}": "x" for n in range(9)} | {"def": "d" * 4000}
            server.client.hset(keys.schedule(name), mapping=fields)
            server.client.zadd(keys.SCHEDULES_ALL, {name: 0})
        exact = sum(
            int(server.client.execute_command("MEMORY", "USAGE", keys.schedule(n), "SAMPLES", 0))
            for n in names
        ) + int(server.client.execute_command("MEMORY", "USAGE", keys.SCHEDULES_ALL))
        measured = bytes_per_schedule(server, len(names))
        assert measured == exact / len(names)
        assert 4000 < measured < 8000  # the large field once, with the hash's overhead
