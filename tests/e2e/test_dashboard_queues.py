"""The dashboard's queues panel in real headless Chromium: depth, state and limits per queue,
Pause and Resume, and each task's queue in the table and the details drawer.

Run: `.venv/bin/python -m pytest tests/e2e/test_dashboard_queues.py -q`. Screenshots land in
tests/artifacts/ (dashboard-queues-*.png).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from shared import queue_control, queue_views
from shared.consumer import Consumer
from shared.queue_control import QueueLimits, RateLimit
from shared.queue_selection import QueueSelection
from shared.redis import Conn
from shared.registry import TaskType, register
from shared.settings import Settings
from tests.conftest import make_settings
from tests.e2e import test_dashboard as dashboard_e2e
from tests.e2e.test_dashboard import (
    PHONE,
    Stack,
    artifact,
    live,
    open_page,
    playwright_api,
    stack_for,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.browser
browser = dashboard_e2e.browser  # the fixtures of the main dashboard suite
stack = dashboard_e2e.stack


def serve_queue(running: Stack, queue: str) -> None:
    """One more in-process worker, serving `queue` only (stopped with the stack's workers)."""
    workers = running.workers
    consumer = Consumer(
        workers.conn,
        workers.settings,
        service="worker",
        lane="work",
        name=f"Worker {queue}",
        concurrency=4,
        lookup=workers.handlers.get,
        queues=QueueSelection("strict", (queue,)),
    )
    workers.jobs.append(asyncio.create_task(consumer.run(workers.stop)))


async def screenshot(page: Any, name: str) -> None:
    """The whole page from the top, once the toasts have gone (they would cover the panel)."""
    await playwright_api.expect(page.locator(".toast")).to_have_count(0)
    await page.mouse.move(0, 0)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.wait_for_function("() => document.getAnimations().length === 0")  # hover fades
    await page.screenshot(path=artifact(name), full_page=True)


async def pending_in(conn: Conn, settings: Settings, queue: str) -> int:
    view = await queue_views.view(conn, queue, dead_after_seconds=settings.dead_after_seconds)
    return view.pending_count


async def test_queues_panel_shows_each_queue_and_pauses_and_resumes_one(
    stack: Stack, browser: Any, conn: Conn, settings: Settings
) -> None:
    expect = playwright_api.expect
    # The stack's worker serves the default queue only: mail and reports wait, ready.
    mail = [await stack.create(type="dash_ok", queue="mail") for _ in range(3)]
    reports = [await stack.create(type="dash_ok", queue="reports") for _ in range(2)]
    limits = QueueLimits(rate_limit=RateLimit(tasks=10, per_seconds=1), max_concurrency=5)
    await queue_control.set_limits(conn, "reports", limits)
    watched = await open_page(browser, stack.dashboard)
    await live(watched)
    page = watched.page

    panel = page.locator("#queues")
    await expect(panel.locator("tr[data-queue]")).to_have_count(3)
    mail_row = panel.locator('tr[data-queue="mail"]')
    reports_row = panel.locator('tr[data-queue="reports"]')
    await expect(mail_row.locator(".c-name")).to_have_text("mail")
    await expect(mail_row.locator(".c-ready")).to_have_text("3")
    await expect(mail_row.locator(".c-total")).to_have_text("3")
    await expect(mail_row.locator(".c-state")).to_have_text("Running")
    await expect(mail_row.locator(".c-limits")).to_have_text("—")
    await expect(reports_row.locator(".c-ready")).to_have_text("2")
    await expect(reports_row.locator(".c-limits")).to_have_text("10 / 1 s · max 5")
    await expect(panel.locator('tr[data-queue="default"] .c-workers')).to_have_text("1")
    await expect(mail_row.locator(".c-workers")).to_have_text("0")

    # Every task shows its queue in the table.
    for task_id in mail:
        await expect(page.locator(f'tr[data-id="{task_id}"] .c-queue')).to_have_text("mail")
    for task_id in reports:
        await expect(page.locator(f'tr[data-id="{task_id}"] .c-queue')).to_have_text("reports")

    await mail_row.locator('button[data-action="pause"]').click()
    await expect(mail_row.locator(".c-state")).to_have_text("Paused")
    assert (await queue_control.get_config(conn, "mail")).paused is True
    await expect(page.locator(".toast", has_text="Queue mail paused")).to_be_visible()
    await expect(reports_row.locator(".c-state")).to_have_text("Running")

    # A worker for mail arrives (the live feed counts it): while paused it starts nothing.
    serve_queue(stack, "mail")
    await expect(mail_row.locator(".c-workers")).to_have_text("1")
    await expect(mail_row.locator(".c-ready")).to_have_text("3")
    assert await pending_in(conn, settings, "mail") == 3
    await expect(mail_row.locator(".c-state")).to_have_text("Paused")  # updates kept it
    await screenshot(page, "dashboard-queues-light.png")

    await mail_row.locator('button[data-action="resume"]').click()
    await expect(mail_row.locator(".c-state")).to_have_text("Running")
    assert (await queue_control.get_config(conn, "mail")).paused is False
    # The live feed shows the worker draining it, without a reload.
    await expect(mail_row.locator(".c-ready")).to_have_text("0")
    for task_id in mail:
        await expect(page.locator(f'tr[data-id="{task_id}"] .pill')).to_have_text("Completed")
    await expect(reports_row.locator(".c-ready")).to_have_text("2")
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1

    # The details drawer names the queue too.
    await page.click(f'tr[data-id="{reports[0]}"]')
    await expect(page.locator('#drawer .kv dt:text-is("Queue") + dd')).to_have_text("reports")
    await page.keyboard.press("Escape")

    # A queue's name picks it in the task filter; "All" shows every queue again.
    await reports_row.locator(".c-name button").click()
    await expect(page.locator("#filter-queue")).to_have_value("reports")
    await expect(page.locator("#task-rows tr")).to_have_count(2)
    await expect(page.locator("#task-rows .c-queue")).to_have_text(["reports", "reports"])
    await page.select_option("#filter-queue", "")
    await expect(page.locator("#task-rows tr")).to_have_count(5)

    await page.click("#theme-toggle")
    await expect(page.locator("html")).to_have_attribute("data-effective-theme", "dark")
    await mail_row.locator('button[data-action="pause"]').click()
    await expect(mail_row.locator(".c-state")).to_have_text("Paused")
    await screenshot(page, "dashboard-queues-dark.png")
    assert watched.errors == []
    assert watched.foreign() == []

    # On a phone each queue is one compact entry, and nothing scrolls sideways.
    phone = await open_page(browser, stack.dashboard, viewport=PHONE, color_scheme="dark")
    await live(phone)
    row = phone.page.locator('#queues tr[data-queue="mail"]')
    await expect(row.locator(".c-ready")).to_have_text("0")
    await row.scroll_into_view_if_needed()
    await expect(row.locator('button[data-action="resume"]')).to_be_in_viewport(ratio=1)
    assert await phone.page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    card = phone.page.locator("section.card", has=phone.page.locator("#queues"))
    await card.screenshot(path=artifact("dashboard-queues-phone.png"))
    assert phone.errors == []


async def test_a_read_only_key_sees_pause_disabled(
    conn: Conn, redis_server: RedisServer, browser: Any
) -> None:
    expect = playwright_api.expect
    settings = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="look-key")
    async with stack_for(conn, settings) as running:
        running.api.headers.update({"Authorization": "Bearer admin-key"})
        await running.create(type="dash_ok", queue="mail")
        watched = await open_page(browser, running.dashboard)
        page = watched.page
        await page.fill("#login-key", "look-key")
        await page.click("#login-form button[type=submit]")
        await live(watched)
        pause = page.locator('#queues tr[data-queue="mail"] button[data-action="pause"]')
        await expect(pause).to_be_disabled()
        await expect(pause).to_have_attribute("title", "This API key may only read")
        await page.click("#logout")
        await page.fill("#login-key", "admin-key")
        await page.click("#login-form button[type=submit]")
        await expect(pause).to_be_enabled()
        await pause.click()
        await expect(page.locator('#queues tr[data-queue="mail"] .c-state')).to_have_text("Paused")
        assert (await queue_control.get_config(conn, "mail")).paused is True
        await page.context.close()


async def test_an_update_read_before_an_answer_does_not_step_the_row_back(
    stack: Stack, browser: Any
) -> None:
    # A live update whose reads started before a pause answered (its `t` is older) may still
    # say "running": the row keeps the answer until an update at least as new arrives.
    watched = await open_page(browser, stack.dashboard)
    await live(watched)
    await playwright_api.expect(watched.page.locator("#queues tr[data-queue]")).to_have_count(1)
    states = await watched.page.evaluate(
        """() => {
          const queues = window.__dashboard.queues;
          const row = queues.rows.get("default");
          queues.answered.set("default", 2000);
          queues.rows.set("default", { ...row, paused: true });
          queues.merge({ t: 1999, queues: [{ ...row, paused: false }] });
          const older = queues.rows.get("default").paused;
          queues.merge({ t: 2000, queues: [{ ...row, paused: false }] });
          return [older, queues.rows.get("default").paused, queues.answered.has("default")];
        }"""
    )
    assert states == [True, False, False]
    assert watched.errors == []


async def test_ready_tasks_no_worker_has_a_handler_for_are_flagged(
    stack: Stack, browser: Any, conn: Conn
) -> None:
    """A worker serves queue gpu but has no handler for dash_gpu: it never takes the task,
    and the queues panel says the task waits for a worker that has one."""
    register(TaskType("dash_gpu", description="a type only GPU workers run"))
    serve_queue(stack, "gpu")
    task_id = await stack.create(type="dash_gpu", queue="gpu")
    watched = await open_page(browser, stack.dashboard)
    await live(watched)
    expect = playwright_api.expect
    ready = watched.page.locator('#queues tr[data-queue="gpu"] .c-ready')
    await expect(ready).to_have_text("1 · 1 no handler")
    await expect(ready).to_have_class(re.compile(r"\bbad\b"))
    await expect(ready).to_have_attribute("title", re.compile(r"with a handler: dash_gpu \(1\)"))
    await expect(watched.page.locator('#queues tr[data-queue="gpu"] .c-workers')).to_have_text("1")
    await expect(watched.page.locator(f'tr[data-id="{task_id}"] .pill')).to_have_text("Pending")
    await screenshot(watched.page, "dashboard-queues-unhandled.png")
    assert watched.errors == []
