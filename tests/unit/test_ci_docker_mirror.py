"""scripts/ci-docker.sh takes its Debian mirror from the machine's own apt sources."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = """Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""


def _mirror(apt: Path, **env: str) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ci-docker.sh"), "mirror"],
        env={**{k: v for k, v in os.environ.items() if k != "DEBIAN_MIRROR"},
             "APT_ETC": str(apt), **env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _apt(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    return tmp_path


def test_a_deb822_source_of_the_suite_is_used_not_security(tmp_path: Path) -> None:
    apt = _apt(tmp_path)
    (apt / "sources.list.d" / "a-security.sources").write_text(SECURITY)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb deb-src\n# a comment\nURIs: http://mirror.corp.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n" + SECURITY
    )
    assert _mirror(apt) == "http://mirror.corp.example/debian"


def test_a_one_line_source_with_options_is_read(tmp_path: Path) -> None:
    apt = _apt(tmp_path)
    (apt / "sources.list").write_text(
        "# deb http://old.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://apt.corp.example/debian bookworm main\n"
    )
    assert _mirror(apt) == "https://apt.corp.example/debian"


def test_no_source_of_the_suite_falls_back_and_the_variable_wins(tmp_path: Path) -> None:
    apt = _apt(tmp_path)
    (apt / "sources.list").write_text("deb http://other.example/debian trixie main\n")
    assert _mirror(apt) == "http://deb.debian.org/debian"
    assert _mirror(apt, DEBIAN_MIRROR="http://given.example/d") == "http://given.example/d"
