"""The liveness file: touched by a process's own loop, read by `--live` checks, no Redis."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import pytest

from shared import liveness


def test_touch_creates_the_file_and_it_counts_as_alive(tmp_path: Path) -> None:
    liveness.touch("worker", tmp_path)
    path = tmp_path / "taskqueue-worker.alive"
    assert path.is_file()
    assert liveness.path_for("worker", tmp_path) == path
    assert liveness.is_alive("worker", 15, tmp_path)
    assert not liveness.is_alive("scheduler", 15, tmp_path)  # one file per service


def test_touch_renews_a_stale_file(tmp_path: Path) -> None:
    liveness.touch("scheduler", tmp_path)
    path = liveness.path_for("scheduler", tmp_path)
    old = time.time() - 60
    os.utime(path, (old, old))
    assert not liveness.is_alive("scheduler", 15, tmp_path)
    assert liveness.is_alive("scheduler", 120, tmp_path)
    liveness.touch("scheduler", tmp_path)
    assert liveness.is_alive("scheduler", 15, tmp_path)


def test_a_missing_file_is_not_alive(tmp_path: Path) -> None:
    assert not liveness.is_alive("worker", 15, tmp_path)
    assert not liveness.is_alive("worker", 15, tmp_path / "no-such-dir")


def test_touch_never_raises_and_logs_an_unwritable_dir_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    caplog.set_level(logging.DEBUG, logger="shared.liveness")
    for where in (not_a_dir, not_a_dir, tmp_path / "missing" / "deeper"):
        liveness.touch("worker", where)
    reports = [r for r in caplog.records if r.name == "shared.liveness"]
    assert len(reports) == 2 and all(r.levelno == logging.DEBUG for r in reports)
    assert not liveness.is_alive("worker", 15, not_a_dir)


def test_liveness_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVENESS_DIR", str(tmp_path))
    liveness.touch("notifier")
    assert (tmp_path / "taskqueue-notifier.alive").is_file()
    assert liveness.is_alive("notifier", 15)
    monkeypatch.delenv("LIVENESS_DIR")
    assert liveness.directory() == Path(tempfile.gettempdir())


def test_service_names_cannot_leave_the_directory(tmp_path: Path) -> None:
    assert liveness.path_for("../etc/x", tmp_path).parent == tmp_path


def test_max_age_is_three_beats_and_at_least_15_s() -> None:
    assert liveness.max_age_for(1.0) == 15.0
    assert liveness.max_age_for(0.2) == 15.0
    assert liveness.max_age_for(10.0) == 30.0
