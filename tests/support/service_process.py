"""A service (`python -m services.<name>`) run as its own process, output collected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Service:
    """`python -m services.<name>` with its output collected line by line."""

    def __init__(self, name: str, redis_url: str, folder: Path, **env: str) -> None:
        environ = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("REDIS_", "HEARTBEAT_", "LIVENESS_", "TASK_MODULES"))
        }
        environ.update(
            PYTHONPATH=str(ROOT),
            REDIS_URL=redis_url,
            LIVENESS_DIR=str(folder),
            HEARTBEAT_SECONDS="0.5",
            IMAGE_TASK_SECONDS="0.1",
        )
        environ.update(env)
        self.name = name
        self.lines: list[str] = []
        # cwd: a folder of its own, so no stray .env is read.
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=folder,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} ignored SIGTERM:\n{''.join(self.lines)}") from None
