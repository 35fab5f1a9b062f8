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

from shared.runtime import GC_YOUNG_THRESHOLD, end_within, first_of


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


def test_every_service_tunes_the_collector_before_it_serves() -> None:
    """The gateway and the dashboard (uvicorn) freeze their start-up objects as the workers,
    scheduler and notifier (shared.runtime.run) do: their entry points are run with
    uvicorn.run stubbed to report the collector's state instead of serving."""
    probe = textwrap.dedent(
        """
        import gc, runpy, sys, uvicorn
        def report(app, **options):
            print(gc.get_freeze_count(), gc.get_threshold()[0], type(app).__name__)
        uvicorn.run = report
        runpy.run_module(sys.argv[1], run_name="__main__")
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    for service in ("services.api", "services.dashboard"):
        done = subprocess.run(
            [sys.executable, "-c", probe, service],
            cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        frozen, young_threshold, app = done.stdout.split()
        assert int(frozen) > 10_000, (service, frozen)  # the imports and the app, frozen
        assert int(young_threshold) == GC_YOUNG_THRESHOLD, (service, young_threshold)
        assert app == "FastAPI", (service, app)
