"""Wait on conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T] | T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll `probe` (a coroutine function, or a plain one for in-process state) until it
    returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        value = probe()
        last = await value if inspect.isawaitable(value) else value
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


def wait_until_sync(
    probe: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


def describe_stuck(tasks: set[asyncio.Task[None]] | list[asyncio.Task[None]]) -> str:
    """Where each task waits, down its chain of awaits and into the tasks it waits on
    (Task.get_stack shows only the outermost frame), so a hang names the await it hangs on."""
    lines: list[str] = []

    def follow(waited: object, depth: int) -> None:
        pad = "  " * depth
        if depth > 20:
            lines.append(f"{pad}...")
        elif isinstance(waited, asyncio.Task):
            lines.append(f"{pad}task {waited.get_name()}")
            step: object = waited.get_coro()
            while (frame := getattr(step, "cr_frame", None)) is not None:
                code = frame.f_code
                lines.append(f"{pad}  {code.co_qualname} ({code.co_filename}:{frame.f_lineno})")
                step = getattr(step, "cr_await", None)
            follow(getattr(waited, "_fut_waiter", None), depth + 1)
        elif (children := getattr(waited, "_children", None)) is not None:  # gather's future
            lines.append(f"{pad}gather")
            for child in children:
                if not child.done():
                    follow(child, depth + 1)
        elif waited is not None:
            lines.append(f"{pad}{waited!r}")

    for task in tasks:
        follow(task, 0)
    return "\n".join(lines)
