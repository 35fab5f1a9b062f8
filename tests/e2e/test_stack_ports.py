"""`make run` (python -m services.stack) with a port already taken: it stops at once, before
starting anything, with a message naming the port and its setting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import taken_port
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
PORT_SETTINGS = ("API_PORT", "DASHBOARD_PORT", "EMBEDDED_REDIS_PORT", "DEV_SMTP_PORT",
                 "DEV_MAIL_HTTP_PORT")  # fmt: skip


@pytest.fixture
def listener() -> Iterator[int]:
    with taken_port() as port:
        yield port


def _run_stack(tmp_path: Path, **ports: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SMTP_HOST")}
    env.update({name: str(free_port()) for name in PORT_SETTINGS})
    env.update({name: str(port) for name, port in ports.items()})
    env.update(DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "services.stack"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("setting", PORT_SETTINGS)
def test_a_taken_port_stops_the_stack_before_it_starts_anything(
    setting: str, listener: int, tmp_path: Path
) -> None:
    done = _run_stack(tmp_path, **{setting: listener})
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {listener}" in done.stderr and f"({setting})" in done.stderr, done.stderr
    assert "starting" not in done.stdout  # nothing was started
    assert not (tmp_path / "data").exists()  # not even the embedded Redis's folder
