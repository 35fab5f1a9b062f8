"""The `taskqueue` command (services/cli) whose reader goes away early, as `| head -2` does:
it stops quietly (exit 141, as a tool killed by SIGPIPE reports), with no traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from services.api.app import create_app
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import ROOT
from tests.support.api_server import serve
from tests.support.seed import ensure_test_types

BROKEN_PIPE = 141  # 128 + SIGPIPE


@pytest.fixture
def api(conn: Conn, settings: Settings) -> Iterator[str]:
    ensure_test_types()
    with serve(create_app(settings)) as base:
        yield base


def run_with_reader_gone(*args: str, url: str) -> tuple[int, str]:
    """Run `python -m services.cli ARGS` with its stdout pipe closed before it writes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "--url", url, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone: every write to stdout fails with EPIPE
    stderr = process.stderr.read().decode()
    return process.wait(timeout=60), stderr


@pytest.mark.parametrize(
    "args",
    [("stats",), ("stats", "--json"), ("list", "--limit", "300"), ("list", "--json", "--all")],
    ids=["stats", "stats-json", "list-table", "list-json"],
)
def test_a_closed_stdout_ends_the_command_quietly(api: str, args: tuple[str, ...]) -> None:
    # Enough tasks that a list fills the output buffer, so the write fails mid-command, and
    # not only in the flush at exit.
    batch = {"tasks": [{"type": "noop", "payload": {"n": n}} for n in range(300)]}
    assert httpx.post(f"{api}/api/tasks/batch", json=batch).status_code == 201
    code, stderr = run_with_reader_gone(*args, url=api)
    assert code == BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == "", stderr


def test_help_into_a_closed_pipe_is_quiet_too(api: str) -> None:
    code, stderr = run_with_reader_gone("--help", url=api)
    assert code == BROKEN_PIPE and stderr == "", stderr
