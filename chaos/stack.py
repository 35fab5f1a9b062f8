"""The system under test: a Redis we can SHUTDOWN or SIGKILL, and the launcher's processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.stack.supervisor import find_redis_server
from shared.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
KEYS = Keys("default")  # the chaos load uses the default queue
PREFIX = KEYS.prefix


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(probe: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class RedisProcess:
    """redis-server with AOF under `folder`; restartable on the same port and data."""

    folder: Path
    appendfsync: str = "everysec"
    port: int = field(default_factory=free_port)
    binary: str = field(default_factory=find_redis_server)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client that does not retry: the harness must see the server as it is."""
        return redis.Redis(
            port=self.port, decode_responses=True, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--dir", str(self.folder), "--appendonly", "yes"]
        args += ["--appendfsync", self.appendfsync, "--save", ""]
        args += ["--logfile", str(self.folder / "redis.log")]
        self.process = subprocess.Popen(args)
        wait_for(self.ping, 30, "redis to answer")

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def version(self) -> str:
        with self.client() as client:
            return str(cast("dict[str, Any]", client.info("server"))["redis_version"])

    def shutdown(self) -> None:
        """SHUTDOWN: Redis fsyncs its AOF and exits."""
        try:
            with self.client() as client:
                client.shutdown()
        except redis.ConnectionError:
            pass  # the server closed the connection as it went
        assert self.process is not None
        self.process.wait(30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class Launcher:
    """`python -m services.stack` pointed at our Redis and mail sink; output to a log file."""

    folder: Path
    redis_url: str
    smtp_port: int
    workers: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "stack.log"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "SMTP_"))}
        return {
            **keep,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis_url,
            "API_PORT": str(self.api_port),
            "DASHBOARD_PORT": str(free_port()),
            "DATA_DIR": str(self.folder / "data"),
            "WORKER_REPLICAS": str(self.workers),
            "TASK_MODULES": "examples.tasks",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_TLS": "none",
            **self.extra_env,
        }

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.stack"],
            cwd=ROOT,
            env=self.env(),
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self.healthy, 60, "a healthy stack")

    def healthy(self) -> bool:
        try:
            body = httpx.get(f"{self.base_url}/api/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        services = body.get("services", {})
        return bool(
            body.get("status") == "ok"
            and services.get("worker", {}).get("instances", 0) >= self.workers
            and services.get("scheduler", {}).get("instances", 0) >= 1
            and services.get("notifier", {}).get("instances", 0) >= 1
        )

    def stop(self) -> float:
        """SIGINT, as Ctrl-C; returns how long the stack took to stop."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started


def live_instances(client: redis.Redis, service: str, dead_after: float) -> list[dict[str, Any]]:
    """Live instances of a service from its heartbeats: instance id, pid, ..."""
    since = int(time.time() * 1000 - dead_after * 1000)
    ids = cast("list[str]", client.zrangebyscore(KEYS.heartbeats(service), since, "+inf"))
    found = []
    for iid in ids:
        raw = client.get(KEYS.instance(service, iid))
        if raw:
            found.append({"instance_id": iid, **json.loads(cast("str", raw))})
    return found


def held_tasks(client: redis.Redis, instance_id: str, queues: list[str] | None = None) -> list[str]:
    """The ids one consumer instance holds, over the given queues (default: the default one)."""
    held: set[str] = set()
    for queue in queues or [KEYS.queue]:
        keys = Keys(queue)
        held |= cast("set[str]", client.smembers(keys.held(instance_id)))
    return sorted(held)
