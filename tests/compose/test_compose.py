"""`docker compose up` as a user runs it: every service healthy, tasks flow, email arrives.

Run with `make test-compose` (CI does). COMPOSE_FILES picks the files: on a machine that can
pull images, `docker-compose.yml` alone; here, plus `docker/compose.local.yml` (local images).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.redis_server import docker_available, free_port
from tests.support.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.compose


class Compose:
    def __init__(self) -> None:
        files = os.environ.get("COMPOSE_FILES", "docker-compose.yml:docker/compose.local.yml")
        self.project = f"tqtest{uuid.uuid4().hex[:8]}"
        self.api_port, self.dashboard_port = free_port(), free_port()
        self.mail_ui_port, self.mail_smtp_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "API_PUBLISH_PORT": str(self.api_port),
            "DASHBOARD_PUBLISH_PORT": str(self.dashboard_port),
            "MAILPIT_UI_PUBLISH_PORT": str(self.mail_ui_port),
            "MAILPIT_SMTP_PUBLISH_PORT": str(self.mail_smtp_port),
            "REDIS_PUBLISH_PORT": str(free_port()),
            "HEALTHCHECK_INTERVAL": "2s",
        }
        self.base = ["docker", "compose", "-p", self.project]
        for name in files.split(":"):
            self.base += ["-f", name]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            cwd=ROOT,
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def compose() -> Iterator[Compose]:
    if shutil.which("docker") is None or not docker_available():
        pytest.fail("no Docker engine: start one (scripts/ci-docker.sh engine) to run these tests")
    stack = Compose()
    up = stack.run("up", "-d", "--wait", "--wait-timeout", "240")
    try:
        assert up.returncode == 0, (
            f"compose up failed:\n{up.stdout}\n{up.stderr}\n{stack.run('logs').stdout[-5000:]}"
        )
        yield stack
    finally:
        down = stack.run("down", "-v", "--timeout", "15")
        print(down.stdout, down.stderr)


def test_every_service_is_healthy_with_three_workers(compose: Compose) -> None:
    ps = compose.run("ps", "--format", "{{.Service}} {{.Health}}").stdout.split("\n")
    services = [line.split() for line in ps if line.strip()]
    assert sorted({s for s, _ in services}) == [
        "api",
        "dashboard",
        "mailpit",
        "notifier",
        "redis",
        "scheduler",
        "worker",
    ]
    assert all(health == "healthy" for _, health in services), services
    assert sum(1 for s, _ in services if s == "worker") == 3
    health = httpx.get(f"http://127.0.0.1:{compose.api_port}/api/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["services"]["worker"]["instances"] == 3
    assert health["services"]["notifier"]["instances"] >= 1
    dashboard = httpx.get(f"http://127.0.0.1:{compose.dashboard_port}/healthz", timeout=10)
    assert dashboard.status_code == 200


def test_a_task_completes_and_an_email_reaches_the_catcher(compose: Compose) -> None:
    api = httpx.Client(base_url=f"http://127.0.0.1:{compose.api_port}", timeout=10)
    image = api.post("/api/tasks", json={"type": "image", "payload": "cat.png"}).json()
    address = f"compose-{uuid.uuid4().hex[:8]}@example.com"
    email = api.post("/api/tasks", json={"type": "email", "payload": address}).json()
    for task in (image, email):
        url = f"/api/tasks/{task['id']}"
        wait_until_sync(
            lambda url=url: api.get(url).json()["status"] == "completed",
            timeout=60,
            message=f"{task['type']} task to complete",
        )

    def delivered() -> bool:
        url = f"http://127.0.0.1:{compose.mail_ui_port}/api/v1/messages"
        messages = httpx.get(url, timeout=5).json()["messages"]
        return any(to["Address"] == address for m in messages for to in m["To"])

    wait_until_sync(delivered, timeout=30, message="the email in the catcher")
