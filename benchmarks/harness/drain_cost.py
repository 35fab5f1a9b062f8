"""What a drain costs per task, in the workers and in Redis: the instrument behind the
`worker_cpu_*` and `redis_cpu_*` rows, for one system and one worker layout at a time.

    python -m benchmarks.harness.drain_cost [--system ours] [--n 20000]
        [--processes 3] [--concurrency 1] [--perf FILE] [--perf-worker]

Starts a fresh Redis (REDIS_SERVER_BIN picks the binary, e.g. one built with symbols),
preloads N no-op tasks, starts the workers and, once they are running, measures until the
queue is drained: the rate, the workers' CPU per task (/proc), Redis's CPU per task
(INFO cpu) and INFO commandstats per task, including every command the scripts run; and
how busy the whole machine was (cores busy, context switches per task): idle cores in a
drain mean its processes wait on each other, not on the CPU.

With --perf FILE, `perf record --call-graph dwarf` samples Redis (or, with --perf-worker,
the first worker) for 3 s of the drain; read it with `perf report -i FILE --children`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from benchmarks.harness import workloads
from benchmarks.harness.procs import Group, run_json
from benchmarks.harness.redisd import fresh_redis
from benchmarks.harness.systems import BY_NAME

STARTED_AFTER = 200  # results before measuring: every worker has claimed and run some


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", default="ours", choices=sorted(BY_NAME))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--perf", type=Path, help="perf.data to write (needs perf on PATH)")
    parser.add_argument("--perf-worker", action="store_true", help="sample a worker, not Redis")
    ns = parser.parse_args()
    if ns.perf and not shutil.which("perf"):
        raise SystemExit("perf not found: apt-get install linux-perf")
    system = BY_NAME[ns.system]
    with fresh_redis() as server, Group(server.url, "drain-cost") as group:
        bulk = ["--bulk"] if system.has_bulk else []  # Huey and others: one at a time
        run_json(system.driver("enqueue", "--n", str(ns.n), *bulk), group.base_env(), 600)
        workers = [group.start(proc) for proc in system.workers(ns.processes, ns.concurrency)]
        workloads.wait_for(
            lambda: workloads.results_len(server) >= STARTED_AFTER, 120, "workers to start"
        )
        cpu_before = [_cpu_seconds(proc.pid) for proc in workers]
        done_before = workloads.results_len(server)
        server.client.config_resetstat()
        redis_before = _redis_cpu_seconds(server.client)
        box_before = workloads.box_counters()
        started = time.monotonic()
        if ns.perf:
            pid = workers[0].pid if ns.perf_worker else server.client.info("server")["process_id"]
            subprocess.run(
                ["perf", "record", "--call-graph", "dwarf", "-p", str(pid), "-o", str(ns.perf),
                 "--", "sleep", "3"], capture_output=True, check=True,
            )  # fmt: skip
        workloads.wait_for(lambda: workloads.results_len(server) >= ns.n, 600, "the drain")
        took = time.monotonic() - started
        done = ns.n - done_before
        worker_us = sum(
            _cpu_seconds(proc.pid) - before
            for proc, before in zip(workers, cpu_before, strict=True)
        )
        redis_us = _redis_cpu_seconds(server.client) - redis_before
        busy, switches = workloads.cores_busy(box_before)
        stats = server.client.info("commandstats")
        group.stop()
    print(
        f"{ns.system} {ns.processes} x {ns.concurrency}: {done / took:,.0f} tasks/s, "
        f"worker CPU {worker_us * 1e6 / done:.0f} us/task, Redis CPU {redis_us * 1e6 / done:.0f} "
        f"us/task{' (perf attached)' if ns.perf else ''}"
    )
    cores = os.cpu_count() or 1
    print(
        f"the box: {busy:.2f} of {cores} cores busy, {100 * (1 - busy / cores):.0f} % idle "
        f"over the drain, {switches / done:.1f} context switches per task"
    )
    rows = sorted(stats.items(), key=lambda item: -int(item[1]["usec"]))
    inner = sum(int(row["calls"]) for name, row in rows if not _is_script(name)) / done
    print(f"commands per task (the scripts' own included): {inner:.2f}")
    for name, row in rows:
        if int(row["calls"]) / done >= 0.05:
            print(
                f"  {name.removeprefix('cmdstat_'):12s} {int(row['calls']) / done:6.2f} calls "
                f"{int(row['usec']) / done:8.2f} us"
            )


def _is_script(name: str) -> bool:
    return name in ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_eval")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


if __name__ == "__main__":
    main()
