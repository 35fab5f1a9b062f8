"""Every bash, sh and python block of the README runs as written against a live `make run`
stack (SPEC section 13), so the examples a newcomer copies cannot rot.

How a block runs:
- bash/sh: `bash -e -o pipefail`, with curl made strict by a curlrc (`--fail-with-body`, so an
  HTTP error fails the block; `--max-time`), the venv's `taskqueue` on PATH, and `API` set
  as the README's API section sets it;
- python: in a fresh interpreter, with top-level `await` allowed (as in `python -m asyncio`),
  and REDIS_URL pointing at the stack's Redis (as `make run` has it on 6379);
- the stack listens on free ports, so `:8080`, `:8081`, `:8025` and `:6379` in a block are
  changed to those (nothing else is);
- in README order, one after the other (a block may use what an earlier one created, as a
  reader going down the page does).

A block that cannot run here says why on the line before its fence:
`<!-- readme-test: not run, <reason> -->` (it starts a stack itself, needs Docker, ...). The
reasons are checked too: a block is left out for one of those reasons only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LANGUAGES = ("bash", "sh", "python")
NOT_RUN = re.compile(r"<!-- readme-test: not run, (?P<reason>.+?) -->")
# Why a block may be left out: it starts or builds something itself, takes long, or never ends.
ALLOWED_REASONS = (
    "starts the stack itself",
    "needs Docker",
    "runs the tests",
    "runs the benchmarks",
    "needs root",
    "streams until stopped",
)
RUN_PYTHON = """
import ast, asyncio, sys, types
source = sys.stdin.read()
code = compile(source, "README block", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
if code.co_flags & 0x80:  # CO_COROUTINE: the block awaits at top level
    asyncio.run(types.FunctionType(code, namespace)())
else:
    exec(code, namespace)
"""


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence
    language: str
    text: str
    not_run: str | None  # the reason, when the README says it is not run

    @property
    def id(self) -> str:
        return f"line-{self.line}-{self.language}"


def readme_blocks() -> list[Block]:
    blocks, lines = [], README.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w+)\s*", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in LANGUAGES:
            previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.search(previous)
            text = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(i + 1, fence.group(1), text, marker and marker["reason"]))
        i = end + 1
    return blocks


BLOCKS = readme_blocks()
RUN = [block for block in BLOCKS if block.not_run is None]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("readme")
    running = Stack(folder).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def environment(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("curl")
    (home / ".curlrc").write_text("fail-with-body\nmax-time = 60\nshow-error\n")
    bin_dir = Path(sys.executable).parent
    return {
        **stack.env,
        "CURL_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "API": f"http://127.0.0.1:{stack.api_port}/api",
        "REDIS_URL": f"redis://127.0.0.1:{stack.redis_port}/0",
    }


def _on_stack(text: str, stack: Stack) -> str:
    for default, port in (
        (8080, stack.api_port),
        (8081, stack.dashboard_port),
        (8025, stack.mail_http_port),
        (6379, stack.redis_port),
    ):
        text = re.sub(rf"(127\.0\.0\.1|localhost):{default}\b", f"127.0.0.1:{port}", text)
    return text


def test_the_readme_has_runnable_blocks_and_says_why_of_the_others() -> None:
    assert len(RUN) >= 10, [b.id for b in RUN]
    for block in BLOCKS:
        if block.not_run is not None:
            assert block.not_run.startswith(ALLOWED_REASONS), (block.id, block.not_run)


@pytest.mark.parametrize("block", RUN, ids=[block.id for block in RUN])
def test_readme_block_runs(block: Block, stack: Stack, environment: dict[str, str]) -> None:
    text = _on_stack(block.text, stack)
    if block.language == "python":
        argv = [sys.executable, "-c", RUN_PYTHON]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", text]
    done = subprocess.run(
        argv,
        input=text if block.language == "python" else None,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"README line {block.line} ({block.language}) exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
