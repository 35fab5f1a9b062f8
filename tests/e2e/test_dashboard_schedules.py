"""The dashboard's schedules panel in real headless Chromium (SPEC section 12): each schedule
with its rule, next run, last task and state; Pause, Resume and Trigger; a click on the last
task opens it in the drawer.

Run: `.venv/bin/python -m pytest tests/e2e/test_dashboard_schedules.py -q`. Screenshots land in
tests/artifacts/ (dashboard-schedules-*.png).
"""

from __future__ import annotations

from typing import Any

import pytest

from shared import schedules
from shared.redis import Conn
from tests.e2e import test_dashboard as dashboard_e2e
from tests.e2e.test_dashboard import PHONE, Stack, artifact, live, open_page, playwright_api
from tests.e2e.test_dashboard_queues import screenshot

pytestmark = pytest.mark.browser
browser = dashboard_e2e.browser  # the fixtures of the main dashboard suite
stack = dashboard_e2e.stack


async def test_schedules_panel_lists_pauses_resumes_and_triggers(
    stack: Stack, browser: Any, conn: Conn
) -> None:
    expect = playwright_api.expect
    nightly = {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "task": {"type": "dash_ok", "payload": {"n": 1}, "queue": "reports"},
    }
    hourly = {"interval_seconds": 3600, "task": {"type": "dash_ok", "payload": {"n": 2}}}
    for name, body in (("nightly.report", nightly), ("hourly-sync", hourly)):
        reply = await stack.api.put(f"/api/schedules/{name}", json=body)
        assert reply.status_code == 201, reply.text
    watched = await open_page(browser, stack.dashboard)
    await live(watched)
    page = watched.page
    rows = page.locator("#schedule-rows tr")
    await expect(rows).to_have_count(2)
    row = page.locator('#schedule-rows tr[data-schedule="nightly.report"]')
    await expect(row.locator(".c-rule")).to_have_text("30 2 * * * · Europe/Berlin")
    await expect(row.locator(".c-type")).to_have_text("dash_ok → reports")
    await expect(row.locator(".c-next")).to_contain_text("in ")
    await expect(
        page.locator('#schedule-rows tr[data-schedule="hourly-sync"] .c-rule')
    ).to_have_text("every 1 h")
    await expect(row.locator(".pill")).to_have_text("Active")

    await row.locator('button[data-action="pause"]').click()
    await expect(row.locator(".pill")).to_have_text("Paused")
    await expect(row.locator(".c-next")).to_have_text("—")
    assert (await schedules.get(conn, "nightly.report")).paused

    await row.locator('button[data-action="trigger"]').click()
    await expect(page.locator(".toast").last).to_contain_text("Schedule nightly.report triggered")
    fired = await schedules.get(conn, "nightly.report")
    assert fired.last_task_id
    await expect(row.locator(".c-last .link")).to_have_text(fired.last_task_id[:8])

    await row.locator('button[data-action="resume"]').click()
    await expect(row.locator(".pill")).to_have_text("Active")
    assert not (await schedules.get(conn, "nightly.report")).paused
    await screenshot(page, "dashboard-schedules-desktop.png")

    phone = await open_page(browser, stack.dashboard, viewport=PHONE, color_scheme="dark")
    await live(phone)
    phone_row = phone.page.locator('#schedule-rows tr[data-schedule="nightly.report"]')
    await phone_row.scroll_into_view_if_needed()  # the panel is far down on a phone
    await expect(phone_row.locator('button[data-action="trigger"]')).to_be_in_viewport(ratio=1)
    await phone.page.locator("#schedules").screenshot(
        path=artifact("dashboard-schedules-phone.png")
    )
    assert phone.errors == []

    await row.locator(".c-last .link").click()  # the last task opens in the drawer
    await expect(page.locator("#drawer")).to_contain_text(fired.last_task_id)
    assert watched.errors == []
    assert watched.foreign() == []


async def test_schedule_actions_are_refused_to_a_read_only_page(stack: Stack, browser: Any) -> None:
    expect = playwright_api.expect
    body = {"interval_seconds": 60, "task": {"type": "dash_ok", "payload": {"n": 1}}}
    assert (await stack.api.put("/api/schedules/every-minute", json=body)).status_code == 201
    watched = await open_page(browser, stack.dashboard)
    await live(watched)
    await watched.page.evaluate("window.__dashboard.schedules.setRole('read')")
    buttons = watched.page.locator(
        '#schedule-rows tr[data-schedule="every-minute"] button[data-action]'
    )
    await expect(buttons).to_have_count(2)
    for index in range(2):
        await expect(buttons.nth(index)).to_be_disabled()
