"""Run the `make run` topology (python -m services.stack) for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port
from tests.support.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]


class Stack:
    """The launcher as a child process, with its prefixed output captured line by line."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.api_port, self.dashboard_port = free_port(), free_port()
        self.redis_port, self.smtp_port, self.mail_http_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "API_PORT": str(self.api_port),
            "DASHBOARD_PORT": str(self.dashboard_port),
            "EMBEDDED_REDIS_PORT": str(self.redis_port),
            "DEV_SMTP_PORT": str(self.smtp_port),
            "DEV_MAIL_HTTP_PORT": str(self.mail_http_port),
            "DATA_DIR": str(folder / "data"),
            "WORKER_REPLICAS": "3",
            "TASK_MODULES": "examples.tasks",
            "IMAGE_TASK_SECONDS": "0.2",
            "RETRY_BACKOFF_SECONDS": "0.1",
            "RETRY_BACKOFF_MAX_SECONDS": "0.5",
            "HEARTBEAT_SECONDS": "0.5",
            "DEAD_AFTER_SECONDS": "2",
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
            **env,
        }
        for name in ("REDIS_URL", "SMTP_HOST", "API_KEYS"):
            if name not in env:
                self.env.pop(name, None)
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=10)

    def start(self, workers: int = 3) -> Stack:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.stack"],
            cwd=ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_healthy(workers)
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def health(self) -> dict[str, Any]:
        try:
            return self.api.get("/api/health").json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return {}

    def wait_healthy(self, workers: int = 3, timeout: float = 30) -> None:
        def ready() -> bool:
            services = self.health().get("services", {})
            return (
                bool(services)
                and services["worker"]["instances"] >= workers
                and services["scheduler"]["instances"] >= 1
            )

        try:
            wait_until_sync(ready, timeout=timeout, message="a healthy stack")
        except AssertionError:
            print("\n".join(self.lines[-60:]))
            raise

    def create(self, **body: Any) -> dict[str, Any]:
        response = self.api.post("/api/tasks", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def task(self, task_id: str) -> dict[str, Any]:
        return self.api.get(f"/api/tasks/{task_id}").json()  # type: ignore[no-any-return]

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        return wait_until_sync(
            lambda: (t := self.task(task_id)) and t["status"] in statuses and t,
            timeout=timeout,
            message=f"task {task_id} to be {statuses}",
        )

    def worker_pid(self, name: str) -> int:
        """The pid of the newest process that logged '<name> started (worker-<host>-<pid>-...)'."""
        pattern = re.compile(rf"{re.escape(name)} started \(worker-.+?-(\d+)-[0-9a-f]+,")
        for line in reversed(self.lines):
            match = pattern.search(line)
            if match:
                return int(match.group(1))
        raise AssertionError(f"no start line for {name}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> float:
        """Signal the launcher; returns how long it took to exit."""
        self.api.close()
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return time.monotonic() - started
