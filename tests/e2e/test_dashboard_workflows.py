"""The task panel's dependencies and dependents (SPEC section 11) in real headless Chromium.

Run: `.venv/bin/python -m pytest tests/e2e/test_dashboard_workflows.py -m browser -q`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_dashboard import Stack, artifact, browser, live, open_page, stack

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.browser
__all__ = ["browser", "stack"]  # fixtures


async def test_the_panel_lists_dependencies_and_dependents_as_links(
    stack: Stack, browser: Any
) -> None:
    expect = playwright_api.expect
    watched = await open_page(browser, stack.dashboard)
    page = watched.page
    await live(watched)
    body = {
        "tasks": [
            {"type": "dash_slow", "payload": {"n": 0}, "ref": "root"},
            {"type": "dash_ok", "payload": {"n": 1}, "ref": "child", "depends_on": ["root"]},
        ]
    }
    reply = await stack.api.post("/api/tasks/batch", json=body)
    assert reply.status_code == 201, reply.text
    refs = reply.json()["refs"]
    await expect(page.locator('[data-status="waiting"] .counter-value')).to_have_text("1")

    await page.goto(f"{stack.dashboard}/#task={refs['child']}")
    drawer = page.locator("#drawer-body")
    await expect(page.locator("#drawer-status")).to_have_text("Waiting")
    section = drawer.locator("section", has_text="Depends on (1)")
    await expect(section.locator(".pill")).to_have_text("Processing")
    await section.locator(f'a[href="#task={refs["root"]}"]').click()
    await expect(page.locator("#drawer-title")).to_have_text("dash_slow")
    dependents = drawer.locator("section", has_text="Dependents (1)")
    await expect(dependents.locator(".pill")).to_have_text("Waiting")
    await page.screenshot(path=artifact("dashboard-dependencies.png"))

    stack.workers.release.set()
    await expect(page.locator("#drawer-status")).to_have_text("Completed")
    await expect(dependents.locator(".pill")).to_have_text("Completed")
    await dependents.locator("a").click()
    await expect(page.locator("#drawer-title")).to_have_text("dash_ok")
    await expect(page.locator("#drawer-status")).to_have_text("Completed")
    assert watched.errors == []
