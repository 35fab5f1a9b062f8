"""Soak: many tasks through one stack; memory of every service and of Redis, plotted.

`python -m chaos.soak --tasks 100000 --out docs` sends tasks in REST batches (image with no
wait, sum, checksum, and 10% email to the sink) while keeping at most --backlog queued,
samples each process's RSS and Redis's used_memory every second, then waits for retention
(RESULT_TTL_SECONDS, short here) to purge the finished tasks and checks Redis memory is back
near its baseline. Writes <out>/soak.png and <out>/soak.json, prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import psutil  # type: ignore[import-untyped]

from chaos.sink import MailSink
from chaos.stack import Launcher, RedisProcess, free_port, wait_for

SERVICES = ("api", "worker", "scheduler", "notifier", "dashboard")
MIB = 1024 * 1024


@dataclass
class Samples:
    t: list[float] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)  # per process label, MiB
    redis: list[float] = field(default_factory=list)  # used_memory MiB


def processes(launcher: Launcher) -> dict[str, psutil.Process]:
    """The launcher's children by label: api, worker-1.., scheduler, notifier, dashboard."""
    assert launcher.process is not None
    found: dict[str, psutil.Process] = {}
    workers = 0
    for child in psutil.Process(launcher.process.pid).children():
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        for service in SERVICES:
            if f"services.{service}" in cmd:
                label = service
                if service == "worker":
                    workers += 1
                    label = f"worker-{workers}"
                found[label] = child
    return found


def sample(
    samples: Samples,
    procs: dict[str, psutil.Process],
    redis: RedisProcess,
    done: int,
    started: float,
) -> None:
    samples.t.append(time.monotonic() - started)
    samples.done.append(done)
    for label, proc in procs.items():
        try:
            rss = proc.memory_info().rss / MIB
        except psutil.Error:
            rss = float("nan")
        samples.rss.setdefault(label, []).append(rss)
    with redis.client() as client:
        info = cast("dict[str, Any]", client.info("memory"))
    samples.redis.append(int(info["used_memory"]) / MIB)


def _batch(start: int, size: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for n in range(start, start + size):
        kind = n % 10
        if kind == 0:
            tasks.append({"type": "email", "payload": f"s{n}@soak.test"})
        elif kind < 5:
            tasks.append({"type": "image", "payload": {"n": n}})
        elif kind < 8:
            tasks.append({"type": "sum", "payload": [n, 1]})
        else:
            tasks.append({"type": "checksum", "payload": f"soak {n}"})
    return tasks


async def send_all(base_url: str, total: int, backlog: int, progress: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        sent = 0
        while sent < total:
            stats = (await http.get("/api/stats")).json()
            progress["done"] = stats["completed_count"] + stats["failed_count"]
            if sent - progress["done"] > backlog:
                await asyncio.sleep(0.2)
                continue
            size = min(200, total - sent)
            response = await http.post("/api/tasks/batch", json={"tasks": _batch(sent, size)})
            response.raise_for_status()
            sent += size
        while progress["done"] < total:
            stats = (await http.get("/api/stats")).json()
            progress["done"] = stats["completed_count"] + stats["failed_count"]
            await asyncio.sleep(0.5)


def summary(samples: Samples, total: int, seconds: float, retention: float) -> dict[str, Any]:
    def at(series: list[float], fraction: float) -> float:
        index = min(len(series) - 1, int(len(series) * fraction))
        return series[index]

    loaded = [i for i, d in enumerate(samples.done) if 0 < d < total] or [0]
    first, last = loaded[0], loaded[-1]
    rows = {}
    for label, series in samples.rss.items():
        rows[label] = {
            "start_mib": round(series[0], 1),
            "at_10pct_mib": round(series[first + (last - first) // 10], 1),
            "end_of_load_mib": round(series[last], 1),
            "peak_mib": round(max(series), 1),
        }
    return {
        "tasks": total,
        "load_seconds": round(seconds, 1),
        "tasks_per_second": round(total / seconds, 1),
        "rss": rows,
        "redis_used_memory_mib": {
            "baseline": round(samples.redis[0], 2),
            "peak": round(max(samples.redis), 2),
            "after_retention": round(samples.redis[-1], 2),
            "retention_seconds": retention,
        },
        "median_redis_mib_at_half": round(at(samples.redis, 0.5), 2),
    }


def residual_keys(redis: RedisProcess) -> dict[str, int]:
    """What is left in Redis after retention, by key kind (ids and numbers masked)."""
    kinds: dict[str, int] = {}
    with redis.client() as client:
        for key in client.scan_iter(count=1000):
            parts = str(key).split(":")
            kind = ":".join(p if not any(c.isdigit() for c in p) else "<n>" for p in parts)
            kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def plot(samples: Samples, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for label, series in sorted(samples.rss.items()):
        top.plot(samples.t, series, label=label, linewidth=1.2)
    top.set_ylabel("RSS (MiB)")
    top.set_title(title)
    top.legend(loc="upper left", ncol=4, fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(samples.t, samples.redis, color="tab:red", label="Redis used_memory")
    twin = bottom.twinx()
    twin.plot(samples.t, samples.done, color="tab:gray", linestyle="--", label="tasks finished")
    bottom.set_ylabel("Redis used_memory (MiB)")
    twin.set_ylabel("tasks finished")
    bottom.set_xlabel("seconds")
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def soak(total: int, backlog: int, retention: int, out: Path) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    redis = RedisProcess(folder / "redis")
    samples = Samples()
    with MailSink(free_port()) as sink:
        redis.start()
        env = {"IMAGE_TASK_SECONDS": "0", "RESULT_TTL_SECONDS": str(retention)}
        launcher = Launcher(folder / "stack", redis.url, sink.port, extra_env=env)
        try:
            launcher.start()
            procs = processes(launcher)
            progress = {"done": 0}
            stop = threading.Event()
            started = time.monotonic()

            def sampler() -> None:
                while not stop.wait(1.0):
                    sample(samples, procs, redis, progress["done"], started)

            sample(samples, procs, redis, 0, started)
            thread = threading.Thread(target=sampler, daemon=True)
            thread.start()
            asyncio.run(send_all(launcher.base_url, total, backlog, progress))
            load_seconds = time.monotonic() - started
            with redis.client() as client:
                wait_for(
                    lambda: int(cast("str", client.hget("tq:{default}:counts", "total") or 0)) == 0,
                    retention + 120,
                    "retention to purge every task",
                    interval=1,
                )
            time.sleep(3)
            stop.set()
            thread.join()
            sample(samples, procs, redis, progress["done"], started)
            residual = residual_keys(redis)
        finally:
            launcher.stop()
            redis.stop()
        deliveries = sum(sink.deliveries.values())
    out.mkdir(parents=True, exist_ok=True)
    result = summary(samples, total, load_seconds, retention)
    result["deliveries"] = deliveries
    result["keys_after_retention"] = residual
    plot(samples, out / "soak.png", f"soak: {total} tasks through one stack (RSS per process)")
    (out / "soak.json").write_text(json.dumps({"summary": result, "samples": samples.__dict__}))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.soak", description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=5000, help="most tasks queued at once")
    parser.add_argument("--retention", type=int, default=60, help="RESULT_TTL_SECONDS")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    result = soak(args.tasks, args.backlog, args.retention, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
