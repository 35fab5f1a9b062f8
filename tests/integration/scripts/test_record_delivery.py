"""record_delivery.lua: attempt history is kept while its task exists, never recreated after."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import deliveries, transitions
from shared.deliveries import DeliveryClaim
from shared.models import WebhookDelivery
from shared.redis import Conn
from shared.settings import Settings
from tests.integration.notifier.helpers import finish_task
from tests.support.waiting import wait_until

URL = "http://127.0.0.1:9/hook"


def attempt(claim: DeliveryClaim, outcome: str) -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id=claim.delivery_id,
        event=claim.event,
        attempt=claim.claims,
        at=datetime.now(tz=UTC),
        url=claim.url,
        status_code=500,
        error="HTTP 500",
        duration_ms=1.0,
        outcome=outcome,
    )


async def claim_one(conn: Conn) -> DeliveryClaim:
    [claim], _ = await deliveries.claim_deliveries(conn, 1, lease_seconds=30)
    return claim


async def test_attempts_are_recorded_while_the_task_exists(conn: Conn, settings: Settings) -> None:
    task = await finish_task(conn, settings, URL)
    claim = await claim_one(conn)
    retry_at = deliveries.redelivery_at_ms(1, settings)
    reply = await deliveries.record_delivery(
        conn, claim, [attempt(claim, "retrying")], retry_at_ms=retry_at, body="{}"
    )
    assert reply == "ok"
    history = await conn.redis.lrange(conn.keys.task_deliveries(task.id), 0, -1)
    assert [WebhookDelivery.model_validate_json(h).outcome for h in history] == ["retrying"]
    assert await conn.redis.zscore(conn.keys.outbox, claim.delivery_id) == retry_at


@pytest.mark.parametrize("final", [False, True], ids=["retry", "done"])
async def test_no_history_is_written_for_a_purged_task(
    conn: Conn, settings: Settings, final: bool
) -> None:
    short = settings.model_copy(update={"result_ttl_seconds": 1})
    task = await finish_task(conn, short, URL)
    claim = await claim_one(conn)  # in flight when retention purges the task
    await wait_until(lambda: transitions.purge_expired(conn), timeout=3, message="the purge")
    assert not await conn.redis.exists(conn.keys.task(task.id))

    retry_at = None if final else deliveries.redelivery_at_ms(1, settings)
    outcome = "failed" if final else "retrying"
    await deliveries.record_delivery(conn, claim, [attempt(claim, outcome)], retry_at_ms=retry_at)

    # Nothing would ever delete a history list recreated here: retention has passed.
    assert not await conn.redis.exists(conn.keys.task_deliveries(task.id))
    if final:
        assert not await conn.redis.exists(conn.keys.delivery(claim.delivery_id))
        assert await conn.redis.zscore(conn.keys.outbox, claim.delivery_id) is None
