"""The systems under test: how to start their workers for a configuration, in which venv.

Every system gets the same task body (benchmarks/systems/common.py: one RPUSH of its start
time), the same Redis, and the same process counts: `high` is each framework's natural high
concurrency per process, `(3, 1)` the one-task-per-process configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.procs import ROOT, Proc

BENCH = ROOT / "benchmarks"
OURS_PY = Path(sys.executable)  # the orchestrator runs in the project's virtualenv
PEERS_PY = BENCH / ".venv-peers" / "bin" / "python"
ARQ_PY = BENCH / ".venv-peers-arq" / "bin" / "python"


@dataclass(frozen=True)
class System:
    name: str
    python: Path
    distributions: tuple[str, ...]  # what `version` reports
    high: tuple[int, int]  # (processes, concurrency per process): the natural high config
    kind: str  # "threads", "asyncio", "processes": how concurrency is spent
    has_bulk: bool = False
    note: str = ""
    root: Path = ROOT  # where its code lives: a patched copy of this repo for "ours-patched"
    family: str = ""  # "ours" for ours and its patched variant; else the name

    @property
    def kind_of(self) -> str:
        return self.family or self.name

    @property
    def is_ours(self) -> bool:
        return self.kind_of == "ours"

    @property
    def module(self) -> str:
        if self.is_ours:
            return "benchmarks.systems.ours"
        return f"benchmarks.systems.{self.name}_app"

    @property
    def bin(self) -> Path:
        return self.python.parent

    def available(self) -> bool:
        return self.python.exists()

    def version(self) -> str:
        code = (
            "import importlib.metadata as m, sys;"
            "print(' '.join(f'{d} {m.version(d)}' for d in sys.argv[1:]))"
        )
        done = subprocess.run(
            [str(self.python), "-c", code, *self.distributions],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() or "unknown"

    def driver(self, *args: str) -> list[str]:
        return [str(self.python), "-m", "benchmarks.systems.drive", self.module, *args]

    def workers(self, processes: int, concurrency: int) -> list[Proc]:
        return _WORKERS[self.kind_of](self, processes, concurrency)

    def support(self) -> list[Proc]:
        """Processes besides workers that the system needs (scheduler, ...)."""
        return _SUPPORT.get(self.kind_of, lambda s: [])(self)


def _ours_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    return [
        Proc(
            f"worker{i + 1}",
            [str(s.python), "-m", "services.worker"],
            {
                "WORKER_CONCURRENCY": str(concurrency),
                "INSTANCE_NAME": f"Worker {i + 1}",
                "TASK_MODULES": "benchmarks.systems.ours",
            },
            s.root,
        )
        for i in range(processes)
    ]


def _ours_support(s: System) -> list[Proc]:
    return [Proc("scheduler", [str(s.python), "-m", "services.scheduler"], root=s.root)]


def _huey_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [str(s.bin / "huey_consumer"), "benchmarks.systems.huey_app.huey", "-k", "thread"]
    return [Proc(f"worker{i + 1}", [*argv, "-w", str(concurrency)]) for i in range(processes)]


def _taskiq_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [
        str(s.bin / "taskiq"), "worker", "benchmarks.systems.taskiq_app:broker",
        "--workers", str(processes), "--max-async-tasks", str(concurrency),
    ]  # fmt: skip
    return [Proc("workers", argv)]


def _taskiq_support(s: System) -> list[Proc]:
    argv = [
        str(s.bin / "taskiq"), "scheduler", "benchmarks.systems.taskiq_app:scheduler",
        "--skip-first-run", "--update-interval", "1",
    ]  # fmt: skip
    return [Proc("scheduler", argv)]


def _dramatiq_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [
        str(s.bin / "dramatiq"), "benchmarks.systems.dramatiq_app",
        "--processes", str(processes), "--threads", str(concurrency),
    ]  # fmt: skip
    return [Proc("workers", argv)]


def _saq_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [str(s.bin / "saq"), "benchmarks.systems.saq_app.settings", "--workers", str(processes)]
    return [Proc("workers", argv, {"SAQ_CONCURRENCY": str(concurrency)})]


def _celery_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [
        str(s.bin / "celery"), "-A", "benchmarks.systems.celery_app", "worker",
        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    return [Proc(f"worker{i + 1}", [*argv, "--hostname", f"w{i + 1}@%h"]) for i in range(processes)]


def _arq_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [str(s.bin / "arq"), "benchmarks.systems.arq_app.WorkerSettings"]
    return [
        Proc(f"worker{i + 1}", argv, {"ARQ_MAX_JOBS": str(concurrency)}) for i in range(processes)
    ]


def _rq_workers(s: System, processes: int, concurrency: int) -> list[Proc]:
    argv = [
        str(s.bin / "rq"), "worker", "--url", "{redis}", "--worker-class",
        "rq.worker.SimpleWorker", "--with-scheduler", "bench",
    ]  # fmt: skip
    return [Proc(f"worker{i + 1}", argv) for i in range(processes)]


_WORKERS = {
    "ours": _ours_workers,
    "huey": _huey_workers,
    "taskiq": _taskiq_workers,
    "dramatiq": _dramatiq_workers,
    "saq": _saq_workers,
    "celery": _celery_workers,
    "arq": _arq_workers,
    "rq": _rq_workers,
}
_SUPPORT = {"ours": _ours_support, "taskiq": _taskiq_support}

OURS = System("ours", OURS_PY, ("taskqueue",), (2, 64), "asyncio", has_bulk=True)
PEERS = [
    System("huey", PEERS_PY, ("huey",), (2, 8), "threads"),
    System("taskiq", PEERS_PY, ("taskiq", "taskiq-redis"), (2, 50), "asyncio"),
    System("dramatiq", PEERS_PY, ("dramatiq",), (2, 8), "threads"),
    System("saq", PEERS_PY, ("saq",), (2, 50), "asyncio"),
    System("celery", PEERS_PY, ("celery", "kombu"), (2, 8), "threads"),
    System("arq", ARQ_PY, ("arq",), (2, 50), "asyncio"),
    System("rq", PEERS_PY, ("rq",), (2, 1), "processes", has_bulk=True),
]
# BENCH_PATCHED_ROOT: another checkout of this repo (a branch with a proposed change),
# measured as "ours-patched" in the same run, beside ours.
_PATCHED = os.environ.get("BENCH_PATCHED_ROOT")
PATCHED = (
    [System("ours-patched", OURS_PY, ("taskqueue",), (2, 64), "asyncio", has_bulk=True,
            root=Path(_PATCHED).resolve(), family="ours")]
    if _PATCHED else []
)  # fmt: skip
ALL = [OURS, *PATCHED, *PEERS]
BY_NAME = {s.name: s for s in ALL}
