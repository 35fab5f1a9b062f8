"""`make run` installs what running needs and nothing of the dev extra (SPEC section 13)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("pytest", "ruff", "mypy", "playwright", "testcontainers", "schemathesis", "matplotlib")


def test_make_run_installs_the_project_without_its_dev_extra(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-n", "run", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    installs = [line for line in done.stdout.splitlines() if "pip install" in line]
    # The project with its otel extra (SPEC section 13: `make run` includes the exporter).
    assert any(line.rstrip().endswith("-e '.[otel]'") for line in installs), done.stdout
    assert not any("[dev]" in line or "[bench]" in line for line in installs), installs


def test_the_runtime_dependencies_hold_no_test_lint_or_benchmark_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    assert not [tool for tool in TOOLS if tool in runtime]
    extras = project["optional-dependencies"]
    assert {"dev", "bench", "embedded"} <= set(extras)
