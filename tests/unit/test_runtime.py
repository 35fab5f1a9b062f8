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

import pytest
from pydantic import ValidationError

from shared.runtime import GC_YOUNG_THRESHOLD, end_within, first_of, use_sched_policy
from shared.settings import Settings


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


def _policy_probe(setting: str, *switches: bool) -> list[str]:
    """`use_sched_policy(setting)` in a fresh interpreter (the test process keeps its own),
    then each of `switches` given to the switch it returned. Prints the policy of the main
    thread after start-up and after each switch, then that of a thread started last, and
    how many times the policy was set."""
    probe = textwrap.dedent(
        f"""
        import os, threading
        calls = []
        real = os.sched_setscheduler
        os.sched_setscheduler = lambda *a: (calls.append(a), real(*a))[1]
        from shared.runtime import use_sched_policy
        switch = use_sched_policy({setting!r})
        seen = [os.sched_getscheduler(0)]
        for backlogged in {list(switches)!r}:
            switch(backlogged)
            seen.append(os.sched_getscheduler(0))
        thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
        thread.start(); thread.join()
        print(switch is None, *seen, len(calls))
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


BATCH, NORMAL = str(os.SCHED_BATCH), str(os.SCHED_OTHER)


def test_batch_and_normal_hold_for_the_process_and_the_threads_it_starts() -> None:
    assert _policy_probe("batch") == ["True", BATCH, BATCH, "1"]
    assert _policy_probe("normal") == ["True", NORMAL, NORMAL, "1"]


def test_auto_starts_normal_and_switches_only_when_the_backlog_comes_or_goes() -> None:
    # normal at start; a backlog: batch (once, however often told); none: normal again; a
    # thread started then inherits what the loop's thread has at that moment.
    seen = _policy_probe("auto", True, True, False, False, True)
    assert seen == ["False", NORMAL, BATCH, BATCH, NORMAL, NORMAL, BATCH, BATCH, "4"]


def test_an_unknown_policy_is_refused_by_the_settings_and_the_helper() -> None:
    with pytest.raises(ValidationError, match="worker_sched_policy"):
        Settings(worker_sched_policy="fifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown scheduling policy 'fifo'"):
        use_sched_policy("fifo")
    assert Settings.model_fields["worker_sched_policy"].default == "auto"
