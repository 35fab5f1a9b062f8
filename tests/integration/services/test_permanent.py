"""`Permanent` (SPEC section 10): a handler that raises it fails its task at once, whatever
retry budget is left; any other exception still retries."""

from __future__ import annotations

from typing import Any

import pytest

from shared import queries
from shared.redis import Conn
from shared.registry import Permanent, TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import assert_consistent, seed_tasks
from tests.support.waiting import wait_until


async def refuse_async(payload: Any, ctx: TaskContext) -> None:
    raise Permanent(f"no such account: {payload['account']}")


def refuse_in_thread(payload: Any, ctx: TaskContext) -> None:
    raise Permanent(f"no such account: {payload['account']}")


@pytest.mark.parametrize("handler", [refuse_async, refuse_in_thread], ids=["async", "thread"])
async def test_permanent_fails_at_once_with_budget_left(
    conn: Conn, settings: Settings, handler: Any
) -> None:
    [task] = await seed_tasks(conn, settings, payload={"account": 42}, max_retries=5)
    async with running(conn, settings, {"noop": handler}):
        await wait_until(status_is(conn, task.id, "failed"), message="the task to fail")
    failed = await queries.get_task(conn, task.id)
    assert failed.retry_count == 0  # not one retry spent
    assert failed.error == "Permanent: no such account: 42"
    details = await queries.get_details(conn, task.id)
    assert [e.event for e in details.events].count("task.claimed") == 1
    await assert_consistent(conn)


async def test_any_other_error_still_retries(conn: Conn, settings: Settings) -> None:
    async def flaky(payload: Any, ctx: TaskContext) -> None:
        raise ValueError("try again")

    [task] = await seed_tasks(conn, settings, max_retries=1)
    async with running(conn, settings, {"noop": flaky}):
        await wait_until(status_is(conn, task.id, "retrying", "failed"), message="a failure")
    assert (await queries.get_task(conn, task.id)).retry_count == 1
