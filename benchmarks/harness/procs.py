"""Starting and stopping the processes of one system (each in its own process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/tq-bench-logs"))


@dataclass(frozen=True)
class Proc:
    """One process to start: its argv and the environment it adds."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    root: Path = ROOT  # working directory and PYTHONPATH (a patched copy for "ours-patched")


class Group:
    """The running processes of one session; stopped (SIGTERM, then SIGKILL) on exit.

    `engine_url` (default: `redis_url`) is the REDIS_URL of our services and producers, when
    the tasks live elsewhere (a Redis Cluster) than the task bodies' results (`redis_url`);
    `env` is added to every process's environment (settings such as EVENTS_MODE).
    """

    def __init__(
        self, redis_url: str, tag: str, engine_url: str = "", env: dict[str, str] | None = None
    ) -> None:
        self.redis_url, self.tag = redis_url, tag
        self.engine_url = engine_url or redis_url
        self.env = dict(env or {})
        self.running: list[tuple[Proc, subprocess.Popen[bytes]]] = []
        LOG_DIR.mkdir(parents=True, exist_ok=True)

    def base_env(self, root: Path = ROOT) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("VIRTUAL_ENV") and k != "PYTHONUNBUFFERED"
        }  # fmt: skip
        env.update(
            PYTHONPATH=str(root),
            BENCH_REDIS_URL=self.redis_url,
            BENCH_ENGINE_URL=self.engine_url,
            REDIS_URL=self.engine_url,
        )
        env.update(self.env)
        return env

    def start(self, proc: Proc) -> subprocess.Popen[bytes]:
        env = self.base_env(proc.root)
        env.update(proc.env)
        log = open(LOG_DIR / f"{self.tag}-{proc.name}.log", "wb")  # noqa: SIM115
        argv = [arg.replace("{redis}", self.redis_url) for arg in proc.argv]
        child = subprocess.Popen(
            argv, cwd=proc.root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.running.append((proc, child))
        return child

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def stop(self, grace: float = 10.0) -> None:
        for _, child in self.running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, child in self.running:
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait()
        # Whatever a launcher left behind in its group (worker subprocesses) goes too.
        for _, child in self.running:
            _signal_group(child, signal.SIGKILL)
        self.running.clear()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def run_json(
    argv: list[str], env: dict[str, str], timeout: float, root: Path = ROOT
) -> dict[str, object]:
    """Run a driver command to completion and parse the JSON line it prints last."""
    import json

    done = subprocess.run(
        argv, cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(argv[-6:])} failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    result: dict[str, object] = json.loads(lines[-1])
    return result
