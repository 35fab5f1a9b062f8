"""The dashboard in a real browser on a running task (SPEC section 10): its progress bar in the
row and the panel, and its Cancel button, which stops it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.registry import TaskContext
from tests.e2e.test_dashboard import (  # noqa: F401 - fixtures
    Stack,
    browser,
    live,
    open_page,
    playwright_api,
    stack,
)

pytestmark = pytest.mark.browser


async def test_a_running_task_shows_progress_and_its_cancel_button_stops_it(
    stack: Stack,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    expect = playwright_api.expect
    started = asyncio.Event()

    async def working(payload: Any, ctx: TaskContext) -> Any:
        await ctx.progress(40, "step 2 of 5")
        started.set()
        await asyncio.sleep(30)
        return "never"

    stack.workers.handlers["dash_slow"] = working
    watched = await open_page(browser, stack.dashboard)
    await live(watched)
    page = watched.page
    task_id = await stack.create(type="dash_slow", max_retries=3)
    await asyncio.wait_for(started.wait(), 10)
    row = page.locator(f'tr[data-id="{task_id}"]')
    await expect(row.locator(".pill")).to_have_text("Processing")
    bar = row.locator(".progress")
    await expect(bar).to_be_visible()
    await expect(bar).to_have_attribute("title", "40% · step 2 of 5")
    await expect(bar.locator(".progress-fill")).to_have_attribute("style", "width: 40%;")

    await row.click()
    await expect(page.locator("#drawer .drawer-progress")).to_contain_text("40% · step 2 of 5")
    await page.locator("#drawer [data-close]").first.click()

    cancel = row.locator('button[data-action="cancel"]')
    await cancel.click()
    await expect(cancel).to_have_text("Confirm")
    await cancel.click()
    await expect(row.locator(".pill")).to_have_text("Cancelled")
    await expect(bar).to_be_hidden()
    reply = await stack.api.get(f"/api/tasks/{task_id}")
    assert reply.json()["status"] == "cancelled" and reply.json()["retry_count"] == 0
    assert watched.errors == []
