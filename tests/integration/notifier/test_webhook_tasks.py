"""Webhook tasks: the notifier POSTs the payload; 2xx completes, anything else is retried."""

from __future__ import annotations

from shared import codec
from shared.models import TaskStatus
from shared.redis import Conn
from shared.settings import Settings
from tests.integration.notifier.helpers import StartNotifier, create, wait_final
from tests.integration.notifier.servers import Receiver


async def test_webhook_task_posts_body_and_headers_and_completes(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    async with Receiver(default=204).running() as receiver:
        await start_notifier(settings)
        payload = {"url": receiver.url, "body": {"hello": "world"}, "headers": {"X-Key": "k1"}}
        task = await create(conn, settings, type="webhook", payload=payload)
        bare = await create(conn, settings, type="webhook", payload=receiver.url)
        done = await wait_final(conn, task.id)
        done_bare = await wait_final(conn, bare.id)

    assert done.status == TaskStatus.COMPLETED and done_bare.status == TaskStatus.COMPLETED
    assert done.result["status_code"] == 204
    by_body = {r.body: r for r in receiver.requests}
    request = by_body[codec.dumps({"hello": "world"}).encode()]
    assert request.headers["x-key"] == "k1"
    assert request.headers["content-type"] == "application/json"
    assert codec.dumps({"task_id": bare.id}).encode() in by_body


async def test_webhook_task_non_2xx_is_retried_then_completes(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    async with Receiver(statuses=[500, 404]).running() as receiver:
        await start_notifier(settings)
        task = await create(conn, settings, type="webhook", payload=receiver.url, max_retries=3)
        done = await wait_final(conn, task.id)

    assert done.status == TaskStatus.COMPLETED
    assert done.retry_count == 2
    assert len(receiver.requests) == 3


async def test_webhook_task_fails_when_budget_is_spent(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    async with Receiver(default=503).running() as receiver:
        await start_notifier(settings)
        task = await create(conn, settings, type="webhook", payload=receiver.url, max_retries=1)
        done = await wait_final(conn, task.id)

    assert done.status == TaskStatus.FAILED
    assert done.error is not None and "HTTP 503" in done.error
    assert len(receiver.requests) == 2
