"""An example plugin module: load it with TASK_MODULES=examples.tasks.

Each `@task` registers a task type the API accepts and every worker runs. Handlers get the
payload and a TaskContext (the task, its attempt number, the settings); what they return is
stored as the task's `result`, and what they raise is its `error` (then retried).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from shared.errors import ValidationFailed
from shared.registry import TaskContext, task
from shared.settings import Settings


def _numbers(payload: Any, settings: Settings) -> None:
    if not isinstance(payload, list) or not all(isinstance(n, int | float) for n in payload):
        raise ValidationFailed("sum payload must be a list of numbers")


@task("sum", validate=_numbers, description="add a list of numbers")
async def add_numbers(payload: list[float], ctx: TaskContext) -> float:
    return sum(payload)


@task("checksum", description="sha256 of a string (a plain function: it runs in a thread)")
def checksum(payload: str, ctx: TaskContext) -> str:
    return hashlib.sha256(str(payload).encode()).hexdigest()


@task(
    "count_up",
    description="a plain function counting to payload['to'] (default 100), 10 ms a step, "
    "reporting progress; a cancel stops it at the next step (ctx.raise_if_cancelled)",
)
def count_up(payload: dict[str, int], ctx: TaskContext) -> int:
    # A plain function runs in a thread, where nothing can interrupt it: it looks at the
    # cancel flag between steps instead.
    to = int(payload.get("to", 100))
    for step in range(to):
        ctx.raise_if_cancelled()
        ctx.progress(100 * step / to, f"{step} of {to}")
        time.sleep(0.01)
    return to


@task("sleep", description="wait payload['seconds'] (for demos and tests)")
async def sleep(payload: dict[str, float], ctx: TaskContext) -> str:
    await asyncio.sleep(float(payload.get("seconds", 1)))
    return "slept"


@task("flaky", description="fail the first payload['fail_attempts'] attempts, then succeed")
async def flaky(payload: dict[str, int], ctx: TaskContext) -> dict[str, int]:
    if ctx.attempt <= int(payload.get("fail_attempts", 1)):
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    return {"succeeded_on_attempt": ctx.attempt}


@task(
    "sum_after",
    validate=_numbers,
    description="add a list of numbers and the numeric results of the task's dependencies "
    "(ctx.dependency_results, SPEC section 11)",
)
async def sum_after(payload: list[float], ctx: TaskContext) -> float:
    results = ctx.dependency_results.values()
    return sum(payload) + sum(r for r in results if isinstance(r, int | float))
