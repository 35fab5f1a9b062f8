"""Completion webhooks (SPEC section 5) to a real HTTP receiver on loopback."""

from __future__ import annotations

import base64

from standardwebhooks.webhooks import Webhook

from shared import codec, queries
from shared.models import TaskDetails
from shared.redis import Conn
from shared.settings import Settings
from tests.conftest import make_settings
from tests.integration.notifier.helpers import StartNotifier, finish_task
from tests.integration.notifier.servers import Receiver
from tests.support.waiting import wait_until

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def deliveries_of(conn: Conn, task_id: str, count: int, timeout: float = 10) -> TaskDetails:
    async def enough() -> TaskDetails | None:
        details = await queries.get_details(conn, task_id)
        return details if len(details.webhook_deliveries) >= count else None

    details = await wait_until(enough, timeout=timeout, message=f"{count} delivery records")
    assert details is not None
    return details


async def test_completion_webhook_is_signed_and_verifies(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(settings.redis_url, webhook_secret=SECRET)
    async with Receiver().running() as receiver:
        await start_notifier(config)
        task = await finish_task(conn, config, receiver.url)
        details = await deliveries_of(conn, task.id, 1)

    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    # The reference verifier raises on a bad signature or a stale timestamp.
    verified = Webhook(SECRET).verify(request.body, request.headers)
    assert verified["event"] == "task.completed"
    body = codec.loads(request.body)
    assert body["task"]["id"] == task.id
    assert body["task"]["status"] == "completed"
    assert body["task"]["result"] == {"ok": 1}
    [record] = details.webhook_deliveries
    assert record.outcome == "delivered" and record.status_code == 200
    assert record.webhook_id == request.headers["webhook-id"]
    assert record.attempt == 1 and record.duration_ms >= 0


async def test_completion_webhook_for_final_failure(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    async with Receiver().running() as receiver:
        await start_notifier(settings)
        task = await finish_task(conn, settings, receiver.url, ok=False, max_retries=0)
        await deliveries_of(conn, task.id, 1)

    body = codec.loads(receiver.requests[0].body)
    assert body["event"] == "task.failed"
    assert body["task"]["status"] == "failed" and body["task"]["error"] == "boom"
    assert "webhook-signature" not in receiver.requests[0].headers  # no WEBHOOK_SECRET


async def test_completion_webhook_retried_with_one_webhook_id(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(settings.redis_url, webhook_secret=SECRET)
    async with Receiver(statuses=[500, 500, 200]).running() as receiver:
        await start_notifier(config)
        task = await finish_task(conn, config, receiver.url)
        details = await deliveries_of(conn, task.id, 3)

    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # retries repeat the same bytes
    for request in receiver.requests:
        Webhook(SECRET).verify(request.body, request.headers)
    records = details.webhook_deliveries
    assert [(r.attempt, r.status_code, r.outcome) for r in records] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 200, "delivered"),
    ]
    assert records[0].error == "HTTP 500"
    assert records[0].at < records[1].at < records[2].at
    # Every attempt is counted for /metrics (taskqueue_webhook_deliveries_total).
    tally = await conn.redis.hgetall(conn.queue(task.queue).metrics)
    assert {k: v for k, v in tally.items() if k.startswith("deliveries|")} == {
        "deliveries|retrying": "2",
        "deliveries|delivered": "1",
    }


async def test_completion_webhook_that_never_answers_records_every_timeout(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(settings.redis_url, webhook_timeout_seconds=0.3, webhook_max_attempts=5)
    async with Receiver(default=None).running() as receiver:
        await start_notifier(config)
        task = await finish_task(conn, config, receiver.url)
        details = await deliveries_of(conn, task.id, 5)

        assert len(receiver.requests) == 5
    records = details.webhook_deliveries
    assert [r.attempt for r in records] == [1, 2, 3, 4, 5]
    assert [r.outcome for r in records] == ["retrying"] * 4 + ["failed"]
    for record in records:
        assert record.status_code is None
        assert record.error == "timed out after 0.3s"
        assert 250 <= record.duration_ms < 5000


async def test_completion_webhook_redirect_is_not_followed(
    conn: Conn, settings: Settings, start_notifier: StartNotifier
) -> None:
    config = make_settings(settings.redis_url, webhook_max_attempts=1)
    async with Receiver().running() as elsewhere, Receiver(default=302).running() as receiver:
        receiver.extra_headers["location"] = elsewhere.url
        await start_notifier(config)
        task = await finish_task(conn, config, receiver.url)
        details = await deliveries_of(conn, task.id, 1)

    assert elsewhere.requests == []
    [record] = details.webhook_deliveries
    assert record.status_code == 302 and record.outcome == "failed"
    assert record.error is not None and "not followed" in record.error
