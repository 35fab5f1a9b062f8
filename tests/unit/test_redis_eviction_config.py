"""Every Redis the project starts itself refuses to evict keys (maxmemory-policy noeviction):
an evicted task record is a task lost without a trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.stack.supervisor import plan
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _policy(argv: list[str]) -> str | None:
    return argv[argv.index("--maxmemory-policy") + 1] if "--maxmemory-policy" in argv else None


def test_make_run_embedded_redis_never_evicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", "/path/to/redis-server")
    settings = Settings(data_dir=str(tmp_path), _env_file=None)
    services, _ = plan(settings, redis_url_given=False, smtp_given=True)
    [redis] = [service for service in services if service.name == "redis"]
    assert _policy(redis.argv) == "noeviction"


def test_compose_redis_never_evicts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert _policy(compose["services"]["redis"]["command"]) == "noeviction"


def test_local_redis_image_never_evicts() -> None:
    lines = (ROOT / "docker" / "redis.Dockerfile").read_text().splitlines()
    [cmd] = [line for line in lines if line.startswith("CMD ")]
    assert _policy(json.loads(cmd.removeprefix("CMD "))) == "noeviction"
