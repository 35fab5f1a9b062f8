"""The workloads, each one session on a flushed Redis: start processes, measure, stop.

Every function returns a list of Sample rows for one system and one repetition, plus
diagnostics (CPU per task, Redis commandstats) kept in the JSON output.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.harness import stats
from benchmarks.harness.procs import Group, Proc, run_json
from benchmarks.harness.redisd import RedisServer, free_port
from benchmarks.harness.systems import OURS_PY, System
from benchmarks.systems.common import RESULTS_KEY


@dataclass
class Sample:
    metric: str
    config: str
    value: float | None
    unit: str
    note: str = ""


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: str, config: str, value: float | None, unit: str, note: str = "") -> None:
        self.samples.append(Sample(metric, config, value, unit, note))


@dataclass(frozen=True)
class Sizes:
    """How big each workload is: the full run or the quick/smoke ones."""

    drain: int = 10_000
    enqueue: int = 10_000
    rate: float = 200.0
    rate_seconds: float = 10.0
    rate_warmup: float = 1.0  # first seconds of the steady rate, not measured
    scheduled: int = 200
    schedule_delay: float = 3.0
    rest_requests: int = 10_000
    rest_batch: int = 100
    # Batch requests: 100 of them (1 s of single creates' tasks) took a quarter of a second and
    # swung 30-45k tasks/s between repetitions; 1,000 take ~2 s.
    rest_batch_requests: int = 1_000
    recovery_trials: int = 3
    drain_budget: float = 60.0  # a drain still running then is measured on what it did
    warm_burst: int = 200  # warm-up burst: grows every connection pool to its concurrency
    settle: float = 1.0  # seconds after the first warm-up task, for every process to be up
    ours_env: tuple[tuple[str, str], ...] = ()  # settings for our processes (smoke: faster)
    limited_rate: int = 100  # rate_limited: the queue's limit, tasks per second
    limited_seconds: float = 20.0  # the window the start rate is measured over
    limited_tasks: int = 2_200  # queued: more than the window can start (it must not run dry)
    limited_concurrency: int = 16  # slots per worker process (WORKER_CONCURRENCY's default)
    failover_rate: float = 200.0  # failover: creates/s through the API, over three queues
    failover_trials: int = 4  # faults per repetition, manual and SIGKILL in turn
    failover_warmup: float = 2.0  # seconds of that load before the first fault
    failover_quiet: float = 1.0  # seconds between a recovered fault and the next
    control_pairs: int = 400  # control: dependency pairs a -> b, one batch each, ~150/s
    control_cancels: int = 40  # control: running tasks cancelled, one at a time
    schedule_count: int = 1_000  # schedules: each firing every second, all on one instant
    schedule_seconds: float = 10.0  # schedules: how long they fire after the warm-up


def config_label(processes: int, concurrency: int) -> str:
    return f"{processes} x {concurrency}"


def wait_for(probe: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def box_counters() -> tuple[int, int, int]:
    """The whole machine so far (/proc/stat): busy and idle time of every core together
    (iowait counts as idle), and context switches."""
    lines = Path("/proc/stat").read_text().splitlines()
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, lines[0].split()[1:9])
    [switches] = [int(line.split()[1]) for line in lines if line.startswith("ctxt ")]
    return user + nice + system + irq + softirq + steal, idle + iowait, switches


def cores_busy(since: tuple[int, int, int]) -> tuple[float, int]:
    """How many cores were busy on average since `since` (box_counters), and the switches."""
    busy, idle, switches = (now - then for now, then in zip(box_counters(), since, strict=True))
    cores = os.cpu_count() or 1
    return cores * busy / max(busy + idle, 1), switches


def results_len(server: RedisServer) -> int:
    return int(server.client.llen(RESULTS_KEY))


def read_results(server: RedisServer) -> list[stats.Start]:
    return stats.parse(server.client.lrange(RESULTS_KEY, 0, -1))


def group_cpu(leader_pids: list[int]) -> float:
    """CPU seconds (user + system) of every live process in the given process groups."""
    tick = os.sysconf("SC_CLK_TCK")
    groups, total = set(leader_pids), 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # field 5 of stat: the process group
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def drive(system: System, group: Group, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run one of the system's producer commands (in its venv, from its code root)."""
    return run_json(system.driver(*args), group.base_env(system.root), timeout, system.root)


def start_system(
    group: Group, system: System, processes: int, concurrency: int, sizes: Sizes,
    worker_env: dict[str, str] | None = None,
) -> list[int]:  # fmt: skip
    workers = system.workers(processes, concurrency)
    if worker_env:
        workers = [replace(p, env={**p.env, **worker_env}) for p in workers]
    procs = [*system.support(), *workers]
    if system.is_ours:
        procs = [replace(p, env={**p.env, **dict(sizes.ours_env)}) for p in procs]
    return [group.start(p).pid for p in procs]


def drive_queues(system: System, group: Group, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run one of our named-queue producer commands (benchmarks/systems/ours_queues.py)."""
    argv = [str(system.python), "-m", "benchmarks.systems.ours_queues", *args]
    return run_json(argv, group.base_env(system.root), timeout, system.root)


def warm_up(system: System, server: RedisServer, group: Group, sizes: Sizes) -> None:
    """Run tasks until every process is up, imports are done and connection pools are grown.

    The last step is a burst of tasks due at one moment (what the lateness workload sends),
    so that each process has opened as many connections as it has slots.
    """
    drive(system, group, "enqueue", "--n", "20", "--arg", "-1")
    wait_for(lambda: results_len(server) >= 20, 120, f"{system.name} first warm-up tasks")
    time.sleep(sizes.settle)  # let the other worker processes finish starting too
    n = sizes.warm_burst
    drive(system, group, "schedule", "--n", str(n), "--delay", "0.3")
    wait_for(lambda: results_len(server) >= n + 20, 120, f"{system.name} warm-up burst")
    time.sleep(sizes.settle / 2)
    server.client.delete(RESULTS_KEY)


# -- drain ---------------------------------------------------------------------------------


def drain(
    system: System, server: RedisServer, processes: int, concurrency: int, sizes: Sizes,
    *, preload_bulk: bool, worker_queues: str = "",
) -> Outcome:  # fmt: skip
    """Pre-enqueue N tasks with no worker running, then start the workers and time the drain.

    With `preload_bulk` False the pre-enqueue is the one-at-a-time producer measurement and
    the run also measures Redis bytes per queued and per finished task.

    With `worker_queues` (ours only, a WORKER_QUEUES value such as "a:6,b:3,c:1") the tasks
    are spread evenly over those queues, sent one at a time in turn by one producer, and the
    workers serve them with that setting; only the drain is measured (the producer's rate
    and the share of each queue in the first third of the starts go to the diagnostics).
    """
    out, n = Outcome(), sizes.drain
    config = config_label(processes, concurrency)
    if worker_queues:
        config += f", WORKER_QUEUES={worker_queues}"
    server.flush()
    base = server.used_memory()
    tag = f"{system.name}-drain-{processes}x{concurrency}" + ("-queues" if worker_queues else "")
    with Group(server.url, tag) as group:
        if worker_queues:
            names = [part.split(":")[0] for part in worker_queues.split(",")]
            enq = drive_queues(
                system, group, "enqueue", "--n", str(n), "--queues", ",".join(names), timeout=600
            )
            out.diagnostics["enqueue_per_second"] = round(float(enq["per_second"]), 1)
        else:
            bulk = preload_bulk and system.has_bulk
            args = ["enqueue", "--n", str(n), *(["--bulk"] if bulk else [])]
            enq = drive(system, group, *args, timeout=600)
            out.add(
                "enqueue_bulk" if bulk else "enqueue", "one producer", float(enq["per_second"]),
                "tasks/s",
            )  # fmt: skip
        queued = server.used_memory()
        if not preload_bulk and not worker_queues:
            out.add("memory_queued", "", (queued - base) / n, "B/task")
        launched_redis = server.cpu_seconds()
        env = {"WORKER_QUEUES": worker_queues} if worker_queues else None
        pids = start_system(group, system, processes, concurrency, sizes, env)
        deadline = time.monotonic() + sizes.drain_budget
        # CPU per task over the same window as the drain rate: from the moment every worker
        # process is at work to the last task. Start-up (imports, connecting) is left out
        # for every system alike: a process pays it once, not per task.
        cpu0, redis0, done0, box0 = 0.0, launched_redis, 0, box_counters()
        note = ""
        try:
            at_work = _at_work(server, processes, n, sizes.drain_budget)
            if at_work is not None:
                cpu0, redis0, done0 = group_cpu(pids), server.cpu_seconds(), at_work
                box0 = box_counters()
            left = deadline - time.monotonic()
            wait_for(lambda: results_len(server) >= n, left, f"{system.name} drain")
        except TimeoutError:
            note = f"stopped after {sizes.drain_budget:.0f} s, {results_len(server)} of {n} done"
        redis_cpu = server.cpu_seconds() - redis0
        cpu = group_cpu(pids) - cpu0
        busy, switches = cores_busy(box0)
        starts = read_results(server)
        rate, window = stats.drain_rate(starts)
        measured = max(len(starts) - done0, 1)
        out.add("drain", config, rate, "tasks/s", note)
        # The workers' processes (the system's own helpers, e.g. our scheduler, included),
        # and Redis's own.
        out.add("worker_cpu", config, cpu / measured * 1e6, "us/task", note)
        out.add("redis_cpu", config, redis_cpu / measured * 1e6, "us/task", note)
        # How much of the machine the drain kept at work: what is idle, the system's
        # processes spent waiting on each other (the harness itself only polls).
        out.add("cores_busy", config, busy, "cores", note)
        out.diagnostics["switches_per_task"] = round(switches / measured, 1)
        out.diagnostics["window_tasks"] = window
        out.diagnostics["cpu_window_tasks"] = measured
        # What the CPU rows leave out: every process's start-up, and the first tasks.
        out.diagnostics["cpu_before_window_s"] = round(cpu0, 2)
        if worker_queues:
            out.diagnostics["share_first_third"] = _queue_shares(starts, names)
        elif not preload_bulk and not note:
            _settle(system, server, n)
            finished = server.used_memory() - server.key_memory(RESULTS_KEY)
            out.add("memory_finished", "", (finished - base) / n, "B/task")
        if system.is_ours:
            out.diagnostics["commandstats"] = _top_commands(server, max(len(starts), 1))
    return out


def _at_work(server: RedisServer, processes: int, n: int, timeout: float) -> int | None:
    """Wait until tasks have started in `processes` different processes (the bodies push
    their pid); returns how many tasks had started by then, or None when that took more
    than half of them (a window that short would measure the tail, not the drain).

    A system whose bodies run in child processes (Celery's prefork pool) may show two
    children of one parent while the other parent still starts: its start-up then counts
    against it, never for it."""
    seen: set[int] = set()
    read = 0

    def probe() -> bool:
        nonlocal read
        new = server.client.lrange(RESULTS_KEY, read, -1)
        read += len(new)
        seen.update(start.pid for start in stats.parse(new))
        return len(seen) >= processes or read >= n

    wait_for(probe, timeout, "every worker process at work")
    return read if read <= n // 2 else None


def _queue_shares(starts: list[stats.Start], names: list[str]) -> dict[str, float]:
    """Each queue's share of the first third of the starts (the argument is its position + 1):
    with weights 6:3:1 over equal loads, about 0.6, 0.3 and 0.1 while all three have work."""
    first = sorted(starts, key=lambda s: s.at)[: max(len(starts) // 3, 1)]
    return {
        name: round(sum(1 for s in first if s.arg == i + 1) / len(first), 3)
        for i, name in enumerate(names)
    }


def _settle(system: System, server: RedisServer, n: int) -> None:
    """Wait until the system has written what it keeps for a finished task."""
    if system.is_ours:
        key = "tq:{default}:counts"
        wait_for(lambda: int(server.client.hget(key, "completed") or 0) >= n, 60, "ours: completed")
    else:
        time.sleep(1.0)  # peers write their result records right after the body returns


def _top_commands(server: RedisServer, n: int) -> dict[str, Any]:
    rows = {
        name: {"calls_per_task": round(int(s["calls"]) / n, 2),
               "usec_per_task": round(int(s["usec"]) / n, 2)}
        for name, s in server.commandstats().items()
    }  # fmt: skip
    top = sorted(rows.items(), key=lambda kv: -kv[1]["usec_per_task"])[:15]
    return dict(top)


# -- latency and lateness ------------------------------------------------------------------


def live(system: System, server: RedisServer, sizes: Sizes) -> Outcome:
    """Latency at a steady rate, then lateness of tasks scheduled ahead, on warm workers."""
    out = Outcome()
    processes, concurrency = system.high
    config = config_label(processes, concurrency)
    server.flush()
    with Group(server.url, f"{system.name}-live") as group:
        pids = start_system(group, system, processes, concurrency, sizes)
        warm_up(system, server, group, sizes)
        cpu0, redis0 = group_cpu(pids), server.cpu_seconds()
        sent = drive(
            system, group, "rate", "--rate", str(sizes.rate), "--seconds",
            str(sizes.rate_seconds), "--warmup", str(sizes.rate_warmup),
            timeout=sizes.rate_seconds + 120,
        )  # fmt: skip
        total = int(sent["sent"]) + int(sent["warmup"])
        wait_for(lambda: results_len(server) >= total, 60, f"{system.name} rate tasks")
        # What a task costs a quiet system (every process sleeps between tasks): the workers'
        # processes (our scheduler included) and Redis, over the whole steady rate.
        out.diagnostics["cpu_at_rate_us_per_task"] = {
            "workers": round((group_cpu(pids) - cpu0) / total * 1e6),
            "redis": round((server.cpu_seconds() - redis0) / total * 1e6),
        }
        lat = [(s.at - s.arg) * 1000 for s in read_results(server) if s.arg > 0]
        rate_label = f"{sizes.rate:g}/s"
        out.add("latency_p99", rate_label, stats.percentile(lat, 99), "ms")
        out.add("latency_p50", rate_label, stats.percentile(lat, 50), "ms")
        out.diagnostics["producer_worst_lag_ms"] = round(float(sent["worst_lag"]) * 1000, 2)
        server.client.delete(RESULTS_KEY)
        drive(
            system, group, "schedule", "--n", str(sizes.scheduled), "--delay",
            str(sizes.schedule_delay),
        )  # fmt: skip
        wait_for(
            lambda: results_len(server) >= sizes.scheduled,
            sizes.schedule_delay + 90,
            f"{system.name} scheduled tasks",
        )
        late = [(s.at - s.arg) * 1000 for s in read_results(server)]
        label = f"{sizes.scheduled} due in {sizes.schedule_delay:g}s"
        out.add("lateness_p99", label, stats.percentile(late, 99), "ms")
        out.diagnostics.update(
            config=config,
            lateness_p50_ms=round(stats.percentile(late, 50), 2),
            lateness_min_ms=round(min(late), 2),
            early=sum(1 for x in late if x < 0),
        )
    return out


# -- a rate-limited queue (ours) ------------------------------------------------------------

LIMITED_QUEUE = "limited"


def rate_limited(system: System, server: RedisServer, sizes: Sizes) -> Outcome:
    """A queue limited to `limited_rate` starts/s, served by 3 warm worker processes: the start
    rate over `limited_seconds` from the first start.

    The limit is set before the workers start (`shared.queue_control.set_limits`, what
    `PUT /api/queues/limited/limits` does); the workers serve `limited,default` and are warmed
    up on the default queue; then `limited_tasks` tasks (more than the window can start) go
    into the limited queue in bulk. The value is the starts (task bodies' start times) in
    [first start, first start + window) divided by the window. The diagnostics add the same
    count from the records' `started` (Redis's clock, where the limiter books each start), the
    most starts in any one-second window, and the starts per worker process.
    """
    out = Outcome()
    processes, concurrency, rate = 3, sizes.limited_concurrency, sizes.limited_rate
    window, n = sizes.limited_seconds, sizes.limited_tasks
    config = f"{rate}/s limit, {config_label(processes, concurrency)}, {window:g} s"
    server.flush()
    with Group(server.url, f"{system.name}-rate-limited") as group:
        drive_queues(
            system, group, "limit", "--queue", LIMITED_QUEUE, "--tasks", str(rate),
            "--per-seconds", "1",
        )  # fmt: skip
        env = {"WORKER_QUEUES": f"{LIMITED_QUEUE},default"}
        start_system(group, system, processes, concurrency, sizes, env)
        warm_up(system, server, group, sizes)
        drive_queues(system, group, "enqueue", "--n", str(n), "--queues", LIMITED_QUEUE, "--bulk")
        wait_for(lambda: results_len(server) >= 1, 30, f"{system.name} first rate-limited start")
        first = min(s.at for s in read_results(server))
        # Bounded: the window, then a moment for the last bodies' RPUSH to land.
        time.sleep(max(first + window - time.time(), 0.0) + 0.3)
        starts = read_results(server)
        started_ms = _started_ms(server, LIMITED_QUEUE)
    inside = sorted(s.at for s in starts if first <= s.at < first + window)
    note = ""
    last = max(s.at for s in starts)
    if len(starts) >= n and last < first + window:
        note = f"the queue ran dry: all {n} started within {last - first:.1f} s"
    out.add("rate_limited", config, len(inside) / window, "tasks/s", note)
    by_pid: dict[int, int] = {}
    for s in starts:
        if first <= s.at < first + window:
            by_pid[s.pid] = by_pid.get(s.pid, 0) + 1
    claims = sorted(started_ms)
    claim_rate = None
    if claims:
        opened = claims[0]
        claim_rate = sum(1 for t in claims if t < opened + window * 1000) / window
    out.diagnostics.update(
        config=config,
        starts_in_window=len(inside),
        started_at_rate=claim_rate,
        max_in_any_second=_max_in_window([t / 1000 for t in claims], 1.0),
        max_in_any_second_body=_max_in_window(inside, 1.0),
        starts_per_process=sorted(by_pid.values(), reverse=True),
    )
    return out


def _started_ms(server: RedisServer, queue: str) -> list[int]:
    """The `started` field (ms, Redis's clock) of every task record of the queue that has one."""
    prefix = f"tq:{{{queue}}}:task:"
    keys = [
        k for k in server.client.scan_iter(f"{prefix}*", count=1000)
        if ":" not in k[len(prefix) :]
    ]  # fmt: skip
    pipe = server.client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "started")
    return [int(float(v)) for v in pipe.execute() if v]


def _max_in_window(times: list[float], width: float) -> int:
    """The most of the sorted times in any half-open window of `width` seconds."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# -- recovery of a SIGKILLed worker's task (ours) ------------------------------------------


def recovery(system: System, server: RedisServer, sizes: Sizes) -> Outcome:
    """SIGKILL the worker running a task; time until another worker starts that task again."""
    out = Outcome()
    server.flush()
    times: list[float] = []
    # Hanging tasks would hold every SIGTERM at the end for the whole shutdown grace.
    sizes = replace(sizes, ours_env=(*sizes.ours_env, ("SHUTDOWN_GRACE_SECONDS", "0.5")))
    with Group(server.url, f"{system.name}-recovery") as group:
        start_system(group, system, 2, 4, sizes)
        warm_up(system, server, group, sizes)
        env = group.base_env(system.root)
        spare = 2
        for trial in range(1, sizes.recovery_trials + 1):
            _enqueue_hang(system, env, float(trial))
            wait_for(lambda t=trial: _starts_of(server, t) >= 1, 30, "hang task start")
            victim = next(s for s in read_results(server) if s.arg == trial).pid
            killed_at = time.time()
            group.kill(victim)
            spare += 1  # the replacement, as compose's restart policy would start it
            extra = system.workers(spare, 4)[-1]
            group.start(replace(extra, env={**extra.env, **dict(sizes.ours_env)}))
            wait_for(lambda t=trial: _starts_of(server, t) >= 2, 60, "recovered task start")
            again = [s for s in read_results(server) if s.arg == trial][1]
            times.append(again.at - killed_at)
    for value in times:
        out.add("recovery", "SIGKILL, defaults", value, "s")
    out.diagnostics["recovery_s"] = [round(t, 3) for t in times]
    return out


def _enqueue_hang(system: System, env: dict[str, str], arg: float) -> None:
    code = (
        "import asyncio, os, sys\n"
        "from shared.producer import Producer\n"
        "from shared.settings import Settings\n"
        "import benchmarks.systems.ours\n"
        "async def go():\n"
        "    s = Settings(redis_url=os.environ['BENCH_REDIS_URL'])\n"
        "    async with Producer.from_settings(s) as p:\n"
        "        await p.enqueue('bench.hang', float(sys.argv[1]), max_retries=0)\n"
        "    print('{}')\n"
        "asyncio.run(go())\n"
    )
    run_json([str(system.python), "-c", code, str(arg)], env, 60, system.root)


def _starts_of(server: RedisServer, arg: float) -> int:
    return sum(1 for s in read_results(server) if s.arg == arg)


# -- REST (ours) ---------------------------------------------------------------------------


def rest(system: System, server: RedisServer, sizes: Sizes) -> Outcome:
    """The REST gateway under a separate load-generator process at 64 connections."""
    out = Outcome()
    server.flush()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with Group(server.url, f"{system.name}-rest") as group:
        api = Proc(
            "api",
            [str(system.python), "-m", "services.api"],
            {"API_PORT": str(port), "BIND_HOST": "127.0.0.1",
             "TASK_MODULES": "benchmarks.systems.ours"},
            system.root,
        )  # fmt: skip
        group.start(replace(api, env={**api.env, **dict(sizes.ours_env)}))
        wait_for(lambda: _http_ok(f"{base}/api/health"), 60, "api up", poll=0.1)
        env = group.base_env()
        n = sizes.rest_requests
        one = json.dumps({"type": "bench.noop", "payload": 0})
        batch = json.dumps({"tasks": [{"type": "bench.noop", "payload": 0}] * sizes.rest_batch})

        def load(path: str, method: str, body: str, requests: int, conns: int) -> dict[str, Any]:
            argv = [
                str(OURS_PY), "-m", "benchmarks.harness.loadgen", "--url", base + path,
                "--method", method, "--body", body, "--connections", str(conns),
                "--requests", str(requests), "--warmup", str(min(500, requests // 10)),
            ]  # fmt: skip
            return run_json(argv, env, 600)

        trivial = load("/docs", "GET", "", n, 64)
        single = load("/api/tasks", "POST", one, n, 64)
        batches = load("/api/tasks/batch", "POST", batch, sizes.rest_batch_requests, 8)
        out.add("rest_trivial", "GET /docs, 64 conns", float(trivial["rps"]), "req/s")
        out.add("rest_single", "64 conns", float(single["rps"]), "tasks/s")
        out.add("rest_single_p99", "64 conns", float(single["p99_ms"]), "ms")
        out.add(
            "rest_batch", f"{sizes.rest_batch}/request, 8 conns",
            float(batches["rps"]) * sizes.rest_batch, "tasks/s",
        )  # fmt: skip
        out.diagnostics.update(trivial=trivial, single=single, batch=batches)
    return out


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
