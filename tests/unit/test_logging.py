"""The fast path for per-task step lines writes exactly what the logging path would."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared import logging as log_setup
from shared.settings import Settings
from tests.support.waiting import wait_until


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    log_setup.configure_logging("worker", Settings(log_format=request.param))
    handler = root.handlers[0]
    assert isinstance(handler, log_setup.LoopBatchingHandler)
    handler.stream = io.StringIO()
    yield handler.stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    log_setup._step_handler = None


def _both_paths(stream: io.StringIO) -> tuple[str, str]:
    logger = logging.getLogger("shared.consumer")
    message = "Worker 1 received task 0198079a-65db"
    log_setup.log_step(logger, message, "0198079a-65db")
    logger.info(message, extra={"task_id": "0198079a-65db"})
    fast, slow = stream.getvalue().splitlines()
    return fast, slow


@pytest.mark.parametrize("captured", ["plain"], indirect=True)
def test_plain_step_line_matches_the_formatter(captured: io.StringIO) -> None:
    fast, slow = _both_paths(captured)
    assert fast.split(" ", 2)[2] == slow.split(" ", 2)[2]  # all but the time of day
    assert fast.split(" ")[2:] == ["worker", "INFO", "Worker", "1", "received", "task",
                                   "0198079a-65db"]  # fmt: skip
    date, clock = fast.split(" ")[:2]
    assert len(date) == 10 and len(clock) == 12 and clock[8] == ","


@pytest.mark.parametrize("captured", ["json"], indirect=True)
def test_json_step_line_matches_the_formatter(captured: io.StringIO) -> None:
    fast, slow = (json.loads(line) for line in _both_paths(captured))
    assert fast.pop("time")[:16] == slow.pop("time")[:16]
    assert (
        fast
        == slow
        == {
            "level": "info",
            "service": "worker",
            "logger": "shared.consumer",
            "message": "Worker 1 received task 0198079a-65db",
            "task_id": "0198079a-65db",
        }
    )


@pytest.mark.parametrize("captured", ["plain"], indirect=True)
def test_step_lines_respect_the_level_and_batch_inside_a_loop(captured: io.StringIO) -> None:
    logger = logging.getLogger("shared.consumer")
    logging.getLogger().setLevel(logging.WARNING)
    log_setup.log_step(logger, "hidden", "t")
    assert captured.getvalue() == ""
    logging.getLogger().setLevel(logging.INFO)

    async def burst() -> list[str]:
        for n in range(3):
            log_setup.log_step(logger, f"line {n}", "t")
        queued = [captured.getvalue()]  # nothing written yet: lines go out together
        await asyncio.sleep(0)
        queued.append(captured.getvalue())  # not even after an iteration of the loop
        await wait_until(captured.getvalue, 5, interval=0.001, message="the batch written")
        return queued

    assert asyncio.run(burst()) == ["", ""]
    assert [line.rsplit(" ", 2)[1:] for line in captured.getvalue().splitlines()] == [
        ["line", "0"], ["line", "1"], ["line", "2"]
    ]  # fmt: skip


def test_without_our_handler_step_lines_go_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        log_setup.log_step(logging.getLogger("shared.consumer"), "seen by caplog", "t-1")
    [record] = caplog.records
    assert record.getMessage() == "seen by caplog" and record.task_id == "t-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("captured", ["plain"], indirect=True)
def test_a_long_burst_is_written_without_waiting_for_the_timer(captured: io.StringIO) -> None:
    logger = logging.getLogger("shared.consumer")
    logging.getLogger().setLevel(logging.INFO)

    async def burst() -> int:
        for n in range(log_setup.LOG_FLUSH_LINES):
            log_setup.log_step(logger, f"line {n}", "t")
        return len(captured.getvalue().splitlines())  # before any iteration of the loop

    assert asyncio.run(burst()) == log_setup.LOG_FLUSH_LINES
