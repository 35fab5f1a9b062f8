"""Run the benchmark: `python -m benchmarks.run [--quick | --smoke] [--systems a,b] [--reps N]`.

Full run (make bench): ours and every peer whose virtualenv exists, 3 repetitions, workloads
interleaved (each repetition runs every workload for every system, in a rotated order), on
one fresh redis-server that is flushed between sessions. Writes results/latest.json,
results/latest.md and results/latest.png. --quick: ours only (results/quick.*), the Redis
Cluster rows (drain_shards, failover: clusters of their own) in the first repetition only;
--smoke: tiny sizes, for the harness test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    cluster_workloads,
    control_workloads,
    report,
    schedule_workloads,
    stats,
    workloads,
)
from benchmarks.harness.procs import ROOT
from benchmarks.harness.redisd import fresh_redis
from benchmarks.harness.systems import ALL, BY_NAME, PEERS_PY, System
from benchmarks.harness.workloads import Sizes

RESULTS = ROOT / "benchmarks" / "results"
SMOKE = Sizes(
    drain=200, enqueue=200, rate=100, rate_seconds=0.5, rate_warmup=0.1, scheduled=20,
    schedule_delay=0.3,
    rest_requests=200, rest_batch=10, rest_batch_requests=20, recovery_trials=1, warm_burst=20,
    settle=0.2,
    ours_env=(("HEARTBEAT_SECONDS", "0.2"), ("DEAD_AFTER_SECONDS", "0.6")),
    limited_seconds=1.0, limited_tasks=150, failover_rate=100, failover_trials=2,
    failover_warmup=0.5, failover_quiet=0.2, control_pairs=20, control_cancels=3,
    schedule_count=20, schedule_seconds=2.0,
)  # fmt: skip
WORKLOADS = (
    "drain_high", "drain_3x1", "live", "rest", "recovery", "drain_queues", "rate_limited",
    "drain_shards", "failover", "control", "schedules",
)  # fmt: skip
OURS_ONLY = {
    "rest", "recovery", "drain_queues", "rate_limited", "drain_shards", "failover", "control",
    "schedules",
}  # fmt: skip
# drain_queues: drain_high's tasks spread evenly over three queues served with these weights.
QUEUE_WEIGHTS = "a:6,b:3,c:1"
# Issue 13: the rows that start Redis Clusters of their own (Redis 7; skipped without it).
ON_A_CLUSTER = {
    "drain_shards": cluster_workloads.drain_shards,
    "failover": cluster_workloads.failover,
}
# failover: per-fault samples, pooled over the repetitions into p50 and p99 rows.
POOLED = ("failover_manual", "failover_kill")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def git_commit(root: Path = ROOT) -> str:
    if root != ROOT:
        return f"with the proposed patches ({root})"
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "shared", "services"], cwd=root,
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return done.stdout.strip() + (" + uncommitted changes" if dirty else "")


# What a drain measures over its window besides the rate: named after its shape too.
_DRAIN_COSTS = ("worker_cpu", "redis_cpu", "cores_busy")


def _named(out: workloads.Outcome, shape: str) -> workloads.Outcome:
    """A drain's samples named after its shape: drain_high, worker_cpu_high, ..."""
    for s in out.samples:
        if s.metric == "drain" or s.metric in _DRAIN_COSTS:
            s.metric = f"{s.metric}_{shape}"
    return out


def run_one(
    workload: str, system: System, server: Any, sizes: Sizes, rep: int = 1
) -> workloads.Outcome:
    high_p, high_c = system.high
    if workload == "drain_high":
        out = workloads.drain(system, server, high_p, high_c, sizes, preload_bulk=False)
        return _named(out, "high")
    if workload == "drain_3x1":
        out = workloads.drain(system, server, 3, 1, sizes, preload_bulk=True)
        out.samples = [s for s in out.samples if s.metric != "enqueue"]
        return _named(out, "3x1")
    if workload == "drain_queues":
        out = workloads.drain(
            system, server, high_p, high_c, sizes, preload_bulk=False, worker_queues=QUEUE_WEIGHTS
        )
        out.samples = [s for s in out.samples if s.metric not in _DRAIN_COSTS]
        return _named(out, "queues")
    if workload == "rate_limited":
        return workloads.rate_limited(system, server, sizes)
    if workload == "live":
        return workloads.live(system, server, sizes)
    if workload == "rest":
        return workloads.rest(system, server, sizes)
    if workload == "control":
        return control_workloads.control(system, server, sizes)
    if workload == "schedules":
        return schedule_workloads.schedules(system, server, sizes)
    if workload in ON_A_CLUSTER:
        try:
            return ON_A_CLUSTER[workload](system, server, sizes, rep)
        except cluster_workloads.Skipped as why:
            print(f"  - {workload}: skipped, {why}", flush=True)
            return workloads.Outcome(diagnostics={"skipped": str(why)})
    out = workloads.recovery(system, server, sizes)
    values = [s.value for s in out.samples if s.value is not None]
    out.samples = [
        workloads.Sample("recovery_p99", "SIGKILL, default settings", max(values), "s")
    ] if values else []  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="ours only, one repetition")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, ours only")
    parser.add_argument("--systems", help="comma-separated (default: ours and every peer)")
    parser.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stem", help="output file stem (default latest / quick / smoke)")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--render", type=Path, help="rebuild .md/.png from a results .json")
    ns = parser.parse_args(argv)
    if ns.render:
        return render(ns.render, chart=not ns.no_chart)
    # SIGTERM unwinds like Ctrl-C, so every started process and the Redis server are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    sizes = SMOKE if ns.smoke else Sizes()
    stem = ns.stem or ("smoke" if ns.smoke else "quick" if ns.quick else "latest")
    reps = ns.reps or (1 if ns.smoke else 2 if ns.quick else 3)
    if ns.systems:
        names = ns.systems.split(",")
    else:
        names = ["ours"] if (ns.quick or ns.smoke) else [s.name for s in ALL]
    systems = [BY_NAME[n] for n in names]
    missing = [s.name for s in systems if not s.available()]
    systems = [s for s in systems if s.available()]
    chosen = ns.workloads.split(",") if ns.workloads else list(WORKLOADS)

    info = machine()
    versions = {s.name: s.version() for s in systems}
    for s in systems:
        if s.is_ours:
            versions[s.name] = f"taskqueue {git_commit(s.root)}"
    samples: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    failures: dict[tuple[str, str], str] = {}
    began = time.monotonic()
    print(f"# benchmark: {', '.join(s.name for s in systems)}; {reps} repetitions", flush=True)
    if missing:
        print(f"# not installed (no virtualenv): {', '.join(missing)}", flush=True)
    with fresh_redis() as server:
        info["redis"] = server.version
        for rep in range(reps):
            for workload in chosen:
                order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
                for system in order:
                    if workload in OURS_ONLY and not system.is_ours:
                        continue
                    if ns.quick and workload in ON_A_CLUSTER and rep > 0:
                        continue  # --quick runs the cluster rows once (~30 s), not twice
                    t0 = time.monotonic()
                    try:
                        outcome = run_one(workload, system, server, sizes, rep + 1)
                    except Exception as exc:
                        failures[(system.name, workload)] = f"{type(exc).__name__}: {exc}"
                        print(f"  ! {system.name} {workload}: {exc}", flush=True)
                        traceback.print_exc(limit=3)
                        continue
                    for s in outcome.samples:
                        samples.append({"system": system.name, "rep": rep + 1, **asdict(s)})
                    diagnostics.append(
                        {"system": system.name, "workload": workload, "rep": rep + 1,
                         **outcome.diagnostics}
                    )  # fmt: skip
                    shown = ", ".join(
                        f"{s.metric}={s.value:,.1f}{s.unit}" for s in outcome.samples
                        if s.value is not None
                    )  # fmt: skip
                    took = time.monotonic() - t0
                    print(f"  rep {rep + 1} {system.name:9s} {workload:12s} {took:5.1f}s  {shown}",
                          flush=True)  # fmt: skip
    info["loadavg_end"] = os.getloadavg()
    samples += derived_samples(samples)
    document = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": info,
        "versions": versions,
        "not_installed": missing,
        "sizes": asdict(sizes),
        "repetitions": reps,
        "seconds": round(time.monotonic() - began, 1),
        "systems": [s.name for s in systems],
        "failures": {f"{k[0]}/{k[1]}": v for k, v in failures.items()},
        "samples": samples,
        "diagnostics": diagnostics,
    }
    main_table = _finish(document, ns.out, stem)
    print()
    print(main_table)
    print(f"\n# wrote {ns.out / stem}.json and .md in {document['seconds']:.0f}s")
    if not ns.no_chart and not ns.smoke:
        _chart(ns.out / f"{stem}.json", ns.out / f"{stem}.png")
    return 1 if failures and "ours" in {k[0] for k in failures} else 0


def derived_samples(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system and repetition, drain_queues / drain_high (both of the same repetition);
    per system, the p50 and p99 of every fault's recovery over all repetitions (rep 0)."""
    by = {(s["system"], s["rep"], s["metric"]): s["value"] for s in samples}
    out = []
    pooled: dict[tuple[str, str], list[float]] = {}
    for s in samples:
        if s["metric"] in POOLED and s["value"] is not None:
            pooled.setdefault((s["system"], s["metric"]), []).append(s["value"])
    for (system, metric), values in pooled.items():
        reps = len({s["rep"] for s in samples if s["metric"] == metric})
        for q in (50, 99):
            out.append({
                "system": system, "rep": 0, "metric": f"{metric}_p{q}",
                "config": f"{len(values)} faults over {reps} repetitions",
                "value": stats.percentile(values, q), "unit": "s", "note": "",
            })  # fmt: skip
    for (system, rep, metric), value in by.items():
        single = by.get((system, rep, "drain_high"))
        if metric == "drain_queues" and value and single:
            out.append({
                "system": system, "rep": rep, "metric": "drain_queues_ratio",
                "config": "/ drain_high of the same repetition", "value": value / single,
                "unit": "x", "note": "",
            })  # fmt: skip
    return out


def _finish(document: dict[str, Any], out: Path, stem: str) -> str:
    """Aggregate the samples into rows and comparisons; write the .json and .md."""
    rows = report.aggregate(document["samples"])
    names = document.get("systems") or list(dict.fromkeys(r["system"] for r in rows))
    comps = {n: report.comparisons(rows, n) for n in names if n.startswith("ours")}
    document["rows"], document["comparisons"] = rows, comps
    failures = {tuple(k.split("/", 1)): v for k, v in document["failures"].items()}
    main_table = report.table(rows, names, comps, _failed_metrics(failures))  # type: ignore[arg-type]
    markdown = _markdown(document, main_table, report.spread_table(rows, names))
    report.write(out, stem, document, markdown)
    return main_table


def render(source: Path, chart: bool = True) -> int:
    """Rebuild the table, the markdown and the chart of a saved run from its samples."""
    document = json.loads(source.read_text())
    print(_finish(document, source.parent, source.stem))
    if chart:
        _chart(source, source.with_suffix(".png"))
    return 0


def _failed_metrics(failures: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    produced = {
        "drain_high": [
            "drain_high", "enqueue", "memory_queued", "memory_finished",
            *(f"{metric}_high" for metric in _DRAIN_COSTS),
        ],
        "drain_3x1": ["drain_3x1", "enqueue_bulk", *(f"{m}_3x1" for m in _DRAIN_COSTS)],
        "live": ["latency_p99", "latency_p50", "lateness_p99"],
        "drain_queues": ["drain_queues", "drain_queues_ratio"],
        "drain_shards": [
            "shards_drain_one", "shards_drain_cluster", "shards_drain_ratio",
            "shards_drain_sharded", "shards_cpu_one", "shards_cpu_shard", "shards_cpu_sum",
            "shards_cpu_sharded",
        ],
        "failover": [
            "failover_manual_p50", "failover_manual_p99", "failover_kill_p50",
            "failover_kill_p99", "failover_refused_manual", "failover_refused_kill",
        ],
    }  # fmt: skip
    out = {}
    for (system, workload), why in failures.items():
        for metric in produced.get(workload, [workload]):
            out[(system, metric)] = why
    return out


def _markdown(doc: dict[str, Any], main_table: str, spread: str) -> str:
    m = doc["machine"]
    versions = "; ".join(f"{k}: {v}" for k, v in doc["versions"].items())
    lines = [
        f"# Benchmark results, {doc['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, Redis {m['redis']} on loopback. Load average at start "
        f"{m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}.",
        f"Medians of {doc['repetitions']} repetitions (min-max below); run took "
        f"{doc['seconds'] / 60:.1f} min.",
        "",
        f"Versions: {versions}.",
        "",
        main_table,
        "",
    ]
    if doc["not_installed"]:
        lines += [f"Not installed: {', '.join(doc['not_installed'])}.", ""]
    if doc["failures"]:
        lines += ["Failures (not counted):", ""]
        lines += [f"- {k}: {v[:300]}" for k, v in doc["failures"].items()]
        lines += [""]
    lines += ["## Every row, with min-max over the repetitions", "", spread, ""]
    return "\n".join(lines)


def _chart(json_path: Path, png_path: Path) -> None:
    """Draw the PNG with matplotlib from the peers' virtualenv (not a project dependency)."""
    if not PEERS_PY.exists():
        print("# chart skipped: benchmarks/.venv-peers (matplotlib) is not installed")
        return
    done = subprocess.run(
        [str(PEERS_PY), "-m", "benchmarks.harness.chart", str(json_path), str(png_path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    if done.returncode == 0:
        print(f"# wrote {png_path}")


if __name__ == "__main__":
    sys.exit(main())
