"""Bulk actions on the dashboard in real headless Chromium (SPEC section 10): tick rows or a
whole page, act on the selection or on every task matching the filters, confirm in a dialog
naming the count, and see the answer and the counters move.

Run: `.venv/bin/python -m pytest tests/e2e/test_dashboard_bulk.py -q`. Screenshots land in
tests/artifacts/ (dashboard-bulk-*.png).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared import codec
from tests.e2e import test_dashboard as dashboard_e2e
from tests.e2e.test_dashboard import PHONE, Stack, artifact, live, open_page, playwright_api

pytestmark = pytest.mark.browser
browser = dashboard_e2e.browser  # the fixtures of the main dashboard suite
stack = dashboard_e2e.stack


def counter(page: Any, status: str) -> Any:
    return page.locator(f'[data-status="{status}"] .counter-value')


async def confirm(page: Any, title: str, button: str) -> None:
    """The dialog asks, naming the count; the operator says yes."""
    expect = playwright_api.expect
    dialog = page.locator("#bulk-dialog")
    await expect(dialog).to_be_visible()
    await expect(page.locator("#bulk-title")).to_have_text(title)
    await expect(page.locator("#bulk-yes")).to_have_text(button)
    await page.click("#bulk-yes")
    await expect(dialog).to_be_hidden()


async def test_bulk_cancel_retry_and_purge_from_the_page(stack: Stack, browser: Any) -> None:
    expect = playwright_api.expect
    later = codec.from_ms(codec.now_ms() + 3_600_000).isoformat()
    scheduled = [await stack.create(type="dash_ok", scheduled_for=later) for _ in range(5)]
    done = await stack.create(type="dash_ok")
    watched = await open_page(browser, stack.dashboard)
    page = watched.page
    await live(watched)
    await expect(counter(page, "scheduled")).to_have_text("5")
    await expect(page.locator(f'tr[data-id="{done}"] .pill')).to_have_text("Completed")

    # Tick three scheduled rows and cancel them.
    await page.click('[data-status="scheduled"]')
    await expect(page.locator("#task-rows tr")).to_have_count(5)
    for task_id in scheduled[:3]:
        await page.locator(f'tr[data-id="{task_id}"] input.row-select').check()
    await expect(page.locator("#bulk-count")).to_have_text("3 tasks selected")
    await expect(page.locator("#select-page")).to_have_js_property("indeterminate", True)
    await page.click('button[data-bulk="cancel"][data-scope="selection"]')
    await expect(page.locator("#bulk-dialog")).to_be_visible()
    await page.screenshot(path=artifact("dashboard-bulk-confirm.png"))
    await confirm(page, "Cancel 3 selected tasks?", "Cancel 3 tasks")
    await expect(page.locator("#bulk-result")).to_have_text("3 tasks cancelled")
    await expect(counter(page, "cancelled")).to_have_text("3")
    await expect(counter(page, "scheduled")).to_have_text("2")
    await expect(page.locator("#task-rows tr")).to_have_count(2)
    await expect(page.locator("#bulk-count")).to_have_text("No tasks selected")

    # "Select all on page", then think better of it: the dialog's "Keep them" writes nothing.
    await page.locator("#select-page").check()
    await expect(page.locator("#bulk-count")).to_have_text("2 tasks selected")
    await page.click('button[data-bulk="cancel"][data-scope="selection"]')
    await page.click("#bulk-no")
    await expect(page.locator("#bulk-dialog")).to_be_hidden()
    await expect(counter(page, "scheduled")).to_have_text("2")

    # Every task matching the filter (status scheduled), counted before asking.
    await page.click('button[data-bulk="cancel"][data-scope="filter"]')
    await confirm(page, "Cancel all 2 tasks?", "Cancel 2 tasks")
    await expect(counter(page, "scheduled")).to_have_text("0")
    await expect(counter(page, "cancelled")).to_have_text("5")

    # A selection the action fits only in part: the answer says what was skipped, and why.
    await page.click('[data-status="total"]')
    await expect(page.locator("#task-rows tr")).to_have_count(6)
    await page.locator(f'tr[data-id="{done}"] input.row-select').check()
    await page.locator(f'tr[data-id="{scheduled[0]}"] input.row-select').check()
    await page.click('button[data-bulk="retry"][data-scope="selection"]')
    await expect(page.locator("#bulk-detail")).to_have_text(
        "1 of them can be queued again; the others will be skipped."
    )
    await confirm(page, "Retry 2 selected tasks?", "Retry 2 tasks")
    await expect(page.locator("#bulk-result")).to_have_text(
        "1 task queued again · 1 skipped (1 not in a status it applies to)"
    )
    await expect(counter(page, "completed")).to_have_text("2")  # the retried one ran
    await expect(counter(page, "cancelled")).to_have_text("4")

    # Purge every cancelled task; the rest stay.
    await page.click('[data-status="cancelled"]')
    await expect(page.locator("#task-rows tr")).to_have_count(4)
    await page.click('button[data-bulk="purge"][data-scope="filter"]')
    await confirm(page, "Purge all 4 tasks?", "Purge 4 tasks")
    await expect(page.locator("#bulk-result")).to_have_text("4 tasks purged")
    await expect(counter(page, "total")).to_have_text("2")
    await expect(counter(page, "cancelled")).to_have_text("0")
    await expect(page.locator("#task-rows tr")).to_have_count(0)
    await page.click('[data-status="total"]')
    await expect(page.locator("#task-rows tr")).to_have_count(2)
    await page.locator("#select-page").check()
    await playwright_api.expect(page.locator(".toast")).to_have_count(0, timeout=10_000)
    await page.locator("section:has(#tasks)").screenshot(path=artifact("dashboard-bulk-result.png"))
    assert watched.errors == []


async def test_bulk_bar_on_a_phone_and_for_a_read_only_key(
    conn: Any, redis_server: Any, browser: Any
) -> None:
    from tests.conftest import make_settings
    from tests.e2e.test_dashboard import stack_for

    expect = playwright_api.expect
    settings = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="look-key")
    async with stack_for(conn, settings) as running:
        running.api.headers.update({"Authorization": "Bearer admin-key"})
        for _ in range(3):
            await running.create(type="dash_ok")
        watched = await open_page(
            browser, running.dashboard, viewport=PHONE, color_scheme="dark", is_mobile=True
        )
        page = watched.page
        await page.fill("#login-key", "look-key")
        await page.click("#login-form button[type=submit]")
        await live(watched)
        await expect(page.locator("#task-rows tr")).to_have_count(3)
        await expect(page.locator("input.row-select").first).to_be_disabled()
        purge_all = page.locator('button[data-bulk="purge"][data-scope="filter"]')
        await expect(purge_all).to_be_disabled()
        await page.click("#logout")
        await page.fill("#login-key", "admin-key")
        await page.click("#login-form button[type=submit]")
        await live(watched)
        await page.locator("input.row-select").first.check()
        await expect(page.locator("#bulk-count")).to_have_text("1 task selected")
        await page.locator("#bulkbar").scroll_into_view_if_needed()
        await page.screenshot(path=artifact("dashboard-bulk-phone-dark.png"))
        await purge_all.click()
        await confirm(page, "Purge all 3 tasks?", "Purge 3 tasks")
        await expect(page.locator("#bulk-result")).to_have_text("3 tasks purged")
        await expect(counter(page, "total")).to_have_text("0")
        await page.context.close()
