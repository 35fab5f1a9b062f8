"""Webhook tasks never sign with WEBHOOK_SECRET: a task's caller chooses the body, so signing
it with the completion-webhook secret would let anyone who may create tasks forge a
`task.completed` that a receiver verifying as the README shows accepts."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.models import TaskStatus
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.notifier.helpers import StartNotifier, create, wait_final
from tests.integration.notifier.servers import Receiver, Request

COMPLETION_SECRET = "whsec_" + base64.b64encode(b"completion-webhooks-secret-32byt").decode()
TASK_SECRET = "whsec_" + base64.b64encode(b"webhook-tasks-only-secret-32byte").decode()
FORGED = {"event": "task.completed", "task": {"id": "someone-elses-task", "status": "completed"}}


async def _run_webhook_task(conn: Conn, config: Settings, start_notifier: StartNotifier) -> Request:
    async with Receiver(default=204).running() as receiver:
        await start_notifier(config)
        payload = {"url": receiver.url, "body": FORGED}
        task = await create(conn, config, type="webhook", payload=payload)
        done = await wait_final(conn, task.id)
    assert done.status == TaskStatus.COMPLETED
    [request] = receiver.requests
    return request


async def test_webhook_task_is_unsigned_without_its_own_secret(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(settings.redis_url, webhook_secret=COMPLETION_SECRET)
    request = await _run_webhook_task(conn, config, start_notifier)

    with pytest.raises(WebhookVerificationError):
        Webhook(COMPLETION_SECRET).verify(request.body, request.headers)
    assert "webhook-signature" not in request.headers


async def test_webhook_task_signs_with_webhook_task_secret_only(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(
        settings.redis_url, webhook_secret=COMPLETION_SECRET, webhook_task_secret=TASK_SECRET
    )
    request = await _run_webhook_task(conn, config, start_notifier)

    assert Webhook(TASK_SECRET).verify(request.body, request.headers) == FORGED
    with pytest.raises(WebhookVerificationError):
        Webhook(COMPLETION_SECRET).verify(request.body, request.headers)
