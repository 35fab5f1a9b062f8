"""TaskContext's control API (SPEC section 10): cancelled, raise_if_cancelled, progress."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.models import Task, TaskStatus
from shared.registry import (
    MAX_PROGRESS_MESSAGE_CHARS,
    RunControl,
    TaskCancelled,
    TaskContext,
    check_progress,
)
from shared.settings import Settings


def context() -> TaskContext:
    now = datetime.now(UTC)
    task = Task(
        id="00000000-0000-4000-8000-000000000000",
        type="noop",
        payload=None,
        status=TaskStatus.PROCESSING,
        priority=3,
        max_retries=0,
        retry_count=0,
        created_at=now,
        updated_at=now,
    )
    return TaskContext(task=task, attempt=1, settings=Settings(_env_file=None))  # type: ignore[call-arg]


def test_cancelled_is_a_property_and_raise_if_cancelled_raises_once_set() -> None:
    ctx = context()
    assert ctx.cancelled is False
    ctx.raise_if_cancelled()  # nothing yet
    ctx.control.cancelled = True  # what the consumer does when the cancel reaches it
    assert ctx.cancelled is True
    with pytest.raises(TaskCancelled):
        ctx.raise_if_cancelled()


async def test_progress_is_awaitable_in_async_handlers() -> None:
    ctx = context()
    assert await ctx.progress(25, "a quarter") is None
    assert ctx.control.last_progress == (25.0, "a quarter")


def test_progress_is_a_plain_call_in_threads_and_warns_nothing() -> None:
    # filterwarnings=error: an unawaited coroutine would fail this test.
    ctx = context()
    thread = threading.Thread(target=lambda: ctx.progress(50))
    thread.start()
    thread.join()
    assert ctx.control.last_progress == (50.0, None)


@pytest.mark.parametrize("percent", [-0.1, 100.5, float("nan"), float("inf")])
def test_progress_out_of_range_is_a_value_error(percent: float) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        context().progress(percent)


@pytest.mark.parametrize("percent", ["50", None, True, [1]])
def test_progress_that_is_not_a_number_is_a_type_error(percent: Any) -> None:
    with pytest.raises(TypeError):
        context().progress(percent)


def test_progress_message_must_be_text_and_is_cut() -> None:
    with pytest.raises(TypeError):
        check_progress(10, 42)
    assert check_progress(0, "x" * 10_000)[1] == "x" * MAX_PROGRESS_MESSAGE_CHARS
    assert check_progress(100, "") == (100.0, None)
    assert check_progress(33, None) == (33.0, None)


def test_a_consumer_control_receives_every_report() -> None:
    class Recording(RunControl):
        __slots__ = ("reports",)

        def __init__(self) -> None:
            super().__init__()
            self.reports: list[tuple[float, str | None]] = []

        def report(self, percent: float, message: str | None) -> None:
            self.reports.append((percent, message))

    control = Recording()
    ctx = context()
    ctx = TaskContext(task=ctx.task, attempt=1, settings=ctx.settings, control=control)
    ctx.progress(1)
    ctx.progress(2.5, "more")
    assert control.reports == [(1.0, None), (2.5, "more")]
