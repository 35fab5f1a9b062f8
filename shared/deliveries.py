"""Completion-webhook deliveries: claiming due ones from the outbox and recording attempts.

complete.lua and fail.lua queue a delivery (a HASH plus an outbox entry) in the same script
that ends the task; the notifier claims it with a lease, POSTs it, and records each attempt
here, so a notifier killed mid-send leaves the delivery to be claimed again (SPEC section 5).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from shared import codec
from shared.models import WebhookDelivery
from shared.redis import Conn, guarded
from shared.settings import Settings

HISTORY_CAP = 200  # attempt records one task keeps (manual retries can queue more deliveries)


@dataclass(frozen=True)
class DeliveryClaim:
    """One completion webhook a notifier now holds, as the outbox knows it."""

    delivery_id: str  # also the Standard Webhooks `webhook-id`: the same on every retry
    task_id: str
    event: str
    url: str
    claims: int  # this claim's number; also the attempt number it makes
    settled: int  # the last claim whose outcome was recorded
    body: str | None  # the JSON sent by earlier attempts, so retries repeat it byte for byte
    previous_claim_ms: int | None
    queue: str = "default"  # the queue of the task (its outbox holds the delivery)

    @property
    def lost_attempts(self) -> range:
        """Attempts whose notifier stopped before recording them (killed mid-send)."""
        return range(self.settled + 1, self.claims)


def _decode_claim(entry: list[str], queue: str) -> DeliveryClaim:
    delivery_id, previous = entry[0], entry[1]
    fields = codec.pairs_to_dict(entry[2:])
    return DeliveryClaim(
        delivery_id=delivery_id,
        task_id=fields["task_id"],
        event=fields["event"],
        url=fields["url"],
        claims=int(fields["claims"]),
        settled=int(fields.get("settled") or 0),
        body=fields.get("body"),
        previous_claim_ms=int(previous) if previous else None,
        queue=queue,
    )


async def claim_deliveries(
    conn: Conn,
    limit: int,
    *,
    lease_seconds: float,
    now_ms: int | None = None,
    queue: str | None = None,
) -> tuple[list[DeliveryClaim], int | None]:
    """Take up to `limit` due deliveries of a queue's outbox, leased for `lease_seconds`.

    Returns the claims and the due time (ms) of the earliest delivery left, or None.
    """
    # The server's clock: a delivery leased by one notifier is judged by another.
    now = now_ms if now_ms is not None else await conn.server_ms()
    k = conn.queue(queue)
    args: list[str | int] = [now, now + int(lease_seconds * 1000), limit]
    next_due, entries = await guarded(conn.scripts["claim_deliveries"]([k.outbox], args))
    due = int(float(next_due))
    return [_decode_claim(entry, k.queue) for entry in entries], (None if due < 0 else due)


async def record_delivery(
    conn: Conn,
    claim: DeliveryClaim,
    records: Sequence[WebhookDelivery],
    *,
    retry_at_ms: int | None,
    body: str | None = None,
) -> str:
    """Append attempt records (dropped when the task was purged meanwhile); reschedule at
    `retry_at_ms`, or finish the delivery when None.

    Returns 'ok', 'missing' (already finished elsewhere) or 'stale' (claimed again meanwhile).
    """
    k = conn.queue(claim.queue)
    keys = [
        k.delivery(claim.delivery_id),
        k.outbox,
        k.task_deliveries(claim.task_id),
        k.wake("outbox"),
        k.task(claim.task_id),
    ]
    args = [
        claim.delivery_id,
        claim.claims,
        "done" if retry_at_ms is None else "retry",
        retry_at_ms or 0,
        body or "",
        HISTORY_CAP,
        *(record.model_dump_json() for record in records),
    ]
    return str((await guarded(conn.scripts["record_delivery"](keys, args)))[0])


async def wait_for_outbox(conn: Conn, timeout: float, queues: Sequence[str] | None = None) -> bool:
    """Block until a delivery is queued in one of `queues` (a wake token) or `timeout`
    seconds pass."""
    wakes = [conn.queue(name).wake("outbox") for name in queues or [conn.keys.queue]]
    # BLPOP reads 0 as "forever"; Redis 6+ takes fractional seconds.
    timeout = max(timeout, 0.01)
    if conn.topology != "cluster" or len(wakes) == 1:
        return await guarded(conn.redis.blpop(wakes, timeout=timeout)) is not None
    # On Redis Cluster a BLPOP cannot span queues (slots): one per queue, the first token
    # wins. A token taken by a call cancelled here is lost, which costs nothing: it is only a
    # hint to look at the outbox, and the loop looks at every queue's anyway.
    waits = [
        asyncio.create_task(guarded(conn.redis.blpop([wake], timeout=timeout))) for wake in wakes
    ]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        return any(task.exception() is None and task.result() is not None for task in done)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def redelivery_at_ms(attempt: int, settings: Settings, *, now_ms: int | None = None) -> int:
    """When to try again after failed attempt number `attempt` (1-based).

    Exponential backoff from RETRY_BACKOFF_SECONDS, capped by RETRY_BACKOFF_MAX_SECONDS, with
    equal jitter (half fixed, half random) as fail.lua uses for task retries.
    """
    now = now_ms if now_ms is not None else codec.now_ms()
    base_ms = settings.retry_backoff_seconds * 1000
    delay = min(settings.retry_backoff_max_seconds * 1000, base_ms * 2 ** (attempt - 1))
    return int(now + delay / 2 + delay / 2 * random.random())
