"""shared.runtime's shutdown helpers: no single await may hold a shutdown for ever."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from shared.runtime import end_within, first_of


async def _stubborn(stop_after: asyncio.Event) -> None:
    """Swallows every cancellation until told to stop (a misbehaving callee)."""
    while not stop_after.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)


async def test_end_within_lets_jobs_finish_and_cancels_the_slow_ones() -> None:
    quick = asyncio.create_task(asyncio.sleep(0.01))
    slow = asyncio.create_task(asyncio.sleep(30))
    started = time.monotonic()
    assert await end_within([quick, slow], 0.2) == set()
    assert quick.done() and not quick.cancelled() and slow.cancelled()
    assert 0.2 <= time.monotonic() - started < 1.0  # the cancelled one ended at once


async def test_end_within_reports_a_job_that_swallows_its_cancellation() -> None:
    release = asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(release))
    started = time.monotonic()
    assert await end_within([stubborn], 0.1) == {stubborn}
    assert time.monotonic() - started < 2.0  # 0.1 s, the cancel, then at most one second
    release.set()
    stubborn.cancel()
    await asyncio.wait([stubborn])


async def test_end_within_retrieves_exceptions_and_accepts_nothing() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    failing = asyncio.create_task(boom())
    assert await end_within([failing], 1) == set()
    assert isinstance(failing.exception(), ValueError)
    assert await end_within([], 1) == set()


async def test_first_of_returns_with_the_first_and_ends_the_others() -> None:
    slow = asyncio.ensure_future(asyncio.sleep(30))
    await first_of(asyncio.sleep(0.01), slow)
    assert slow.cancelled()


def test_a_service_process_exits_though_a_task_ignores_its_cancellation(tmp_path: Path) -> None:
    script = tmp_path / "stray.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, contextlib, logging
            from shared.runtime import run

            async def stubborn():
                while True:
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.sleep(10)

            async def main():
                asyncio.get_running_loop().create_task(stubborn())
                await asyncio.sleep(0.05)

            logging.basicConfig()
            run(main())
            """
        )
    )
    root = Path(__file__).resolve().parents[2]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], cwd=root, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exiting with 1 tasks that ignored their cancellation" in done.stderr
    assert time.monotonic() - started < 10  # one second for the cancel, plus start-up
