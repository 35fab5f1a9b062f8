"""Profile one of our worker processes draining a preloaded queue, with py-spy.

    python -m benchmarks.harness.profile [--n 30000] [--concurrency 64] [--out DIR]

Starts a fresh Redis, preloads N no-op tasks, runs ONE `python -m services.worker` under
`py-spy record` (py-spy from PATH or $PY_SPY) until the queue is drained, and prints the
functions with the most samples, by own time and by inclusive time, plus Redis commandstats.
Writes DIR/worker.svg (flame graph) and DIR/worker.txt (collapsed stacks).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.harness import workloads
from benchmarks.harness.procs import Group, Proc, run_json
from benchmarks.harness.redisd import fresh_redis
from benchmarks.harness.systems import OURS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tq-profile"))
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ns = parser.parse_args()
    py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy not found: pip install py-spy (or set PY_SPY)")
    ns.out.mkdir(parents=True, exist_ok=True)
    with fresh_redis() as server, Group(server.url, "profile") as group:
        run_json(OURS.driver("enqueue", "--n", str(ns.n), "--bulk"), group.base_env(), 600)
        server.client.config_resetstat()
        worker = OURS.workers(1, ns.concurrency)[0]
        collapsed = ns.out / "worker.txt"
        for fmt, target in (("raw", collapsed),):
            argv = [
                py_spy, "record", "--rate", str(ns.rate), "--format", fmt, "-o", str(target),
                "--nonblocking", "--", *worker.argv,
            ]  # fmt: skip
            started = time.monotonic()
            spy = group.start(Proc("profiled", argv, worker.env))
            workloads.wait_for(lambda: workloads.results_len(server) >= ns.n, 600, "profiled drain")
            took = time.monotonic() - started
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            spy.wait(30)
            group.stop()
        print(f"drained {ns.n} tasks in {took:.1f}s with one worker ({ns.n / took:,.0f}/s "
              "including start-up and py-spy's overhead)")  # fmt: skip
        print(summarise(collapsed))
        print("redis commandstats (per task):")
        for name, row in workloads._top_commands(server, ns.n).items():
            print(f"  {name:12s} {row['calls_per_task']:6.2f} calls {row['usec_per_task']:7.2f} us")
    subprocess.run(
        ["sh", "-c", f"command -v flamegraph.pl >/dev/null && flamegraph.pl {collapsed} "
         f"> {ns.out / 'worker.svg'}"], check=False,
    )  # fmt: skip


def summarise(collapsed: Path, top: int = 30) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    lines = [f"{total} samples; own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines += ["inclusive time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(where.split('/')[-2:])})"


if __name__ == "__main__":
    main()
