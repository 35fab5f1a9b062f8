"""Completion webhooks (SPEC section 5): claim due deliveries, POST them signed, record each try.

Bounded by `concurrency` deliveries in flight. A delivery stays in the outbox, leased, while it
is sent, so one held by a notifier that dies is sent again after the lease; on SIGTERM the
deliveries still in flight after the grace period are recorded as interrupted and due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from services.notifier import signing
from services.notifier.webhooks import Poster, PostResult
from shared import codec, deliveries, queries, queues, tracing
from shared.deliveries import DeliveryClaim
from shared.models import WebhookDelivery
from shared.redis import Conn
from shared.runtime import end_within, first_of, wait_or_stop
from shared.settings import Settings

logger = logging.getLogger(__name__)
IDLE_POLL_SECONDS = 1.0  # longest sleep without a wake token, as a safety net


class Outbox:
    """The completion-webhook loop of one notifier process."""

    def __init__(
        self,
        conn: Conn,
        settings: Settings,
        poster: Poster,
        secrets: list[bytes],
        *,
        concurrency: int,
    ) -> None:
        self.conn, self.settings, self.poster, self.secrets = conn, settings, poster, secrets
        self.concurrency = concurrency
        # Longer than one attempt can take, so a live notifier never loses its lease.
        self.lease_seconds = settings.webhook_timeout_seconds + settings.task_lease_seconds
        self.running: dict[str, asyncio.Task[None]] = {}
        self.slot_free = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then drain within SHUTDOWN_GRACE_SECONDS."""
        pause = 0.0
        try:
            while not stop.is_set():
                free = self.concurrency - len(self.running)
                if free <= 0:
                    self.slot_free.clear()
                    await first_of(self.slot_free.wait(), stop.wait())
                    continue
                try:
                    names = await queues.known(self.conn)
                    claimed: list[DeliveryClaim] = []
                    next_due: int | None = None
                    for name in names:  # every queue's outbox
                        more, due = await deliveries.claim_deliveries(
                            self.conn,
                            free - len(claimed),
                            lease_seconds=self.lease_seconds,
                            queue=name,
                        )
                        claimed += more
                        if due is not None and (next_due is None or due < next_due):
                            next_due = due
                        if len(claimed) >= free:
                            break
                    for claim in claimed:
                        job = asyncio.create_task(self._deliver(claim))
                        self.running[claim.delivery_id] = job
                    if len(claimed) < free:
                        wait = IDLE_POLL_SECONDS
                        if next_due is not None:
                            now = await self.conn.server_ms()  # the clock claims judge by
                            wait = min(wait, max(next_due - now, 0) / 1000)
                        await first_of(
                            deliveries.wait_for_outbox(self.conn, wait, names), stop.wait()
                        )
                    pause = 0.0
                except Exception as exc:
                    pause = min(max(pause * 2, 0.1), 2.0)
                    logger.warning("outbox cannot claim (%s); retrying in %.1fs", exc, pause)
                    await wait_or_stop(stop, pause)
        finally:
            await self._drain()

    async def _deliver(self, claim: DeliveryClaim) -> None:
        try:
            await self._attempt(claim)
        except asyncio.CancelledError:
            await self._interrupted(claim)
            raise
        except Exception:
            # The lease brings it back: the next claim records this attempt as lost.
            logger.exception("delivery %s failed unexpectedly", claim.delivery_id)
        finally:
            self.running.pop(claim.delivery_id, None)
            self.slot_free.set()

    async def _attempt(self, claim: DeliveryClaim) -> None:
        max_attempts = self.settings.webhook_max_attempts
        lost = [self._lost_record(claim, n) for n in claim.lost_attempts]
        body = claim.body or await self._body(claim)
        if body is None:
            gone = self._record(claim, PostResult(None, "the task no longer exists", 0), "failed")
            await self._record_all(claim, [*lost, gone], None, None)
            return
        if claim.claims > max_attempts:
            # Every attempt was lost mid-send (lost is not empty): stop instead of looping.
            lost[-1] = lost[-1].model_copy(update={"outcome": "failed"})
            await self._record_all(claim, lost, None, body)
            return
        raw = body.encode()
        headers = signing.webhook_headers(self.secrets, claim.delivery_id, raw)
        result = await self._post(claim, raw, headers)
        if result.ok:
            outcome, retry_at = "delivered", None
        elif result.refused:
            outcome, retry_at = "refused", None
        elif claim.claims >= max_attempts:
            outcome, retry_at = "failed", None
        else:
            outcome = "retrying"
            retry_at = deliveries.redelivery_at_ms(claim.claims, self.settings)
        record = self._record(claim, result, outcome)
        await self._record_all(claim, [*lost, record], retry_at, body)
        log = logger.info if outcome in ("delivered", "retrying") else logger.warning
        log(
            "webhook %s for task %s attempt %d: %s (%s)",
            claim.event,
            claim.task_id,
            claim.claims,
            outcome,
            result.status_code or result.error,
            extra={"task_id": claim.task_id},
        )

    async def _post(self, claim: DeliveryClaim, raw: bytes, headers: dict[str, str]) -> PostResult:
        """POST one attempt; when the notifier traces, in a `notify` span of the task's trace
        (SPEC section 13), whose traceparent the request carries too."""
        if tracing.tracer_for("notifier") is None:
            return await self.poster.post(claim.url, raw, headers)
        parent = await queries.traceparent(self.conn, claim.task_id, queue=claim.queue)
        with tracing.notify_span("notifier", "webhook", claim.task_id, claim.url, parent) as span:
            tracing.inject(span, headers)
            result = await self.poster.post(claim.url, raw, headers)
            tracing.delivered(span, result.status_code, result.error)
        return result

    async def _body(self, claim: DeliveryClaim) -> str | None:
        """The JSON body, built from the task as it ended; kept for retries by record_delivery."""
        tasks = await queries.get_tasks(self.conn, [claim.task_id], queue=claim.queue)
        if not tasks:
            return None
        return codec.dumps({"event": claim.event, "task": tasks[0].model_dump(mode="json")})

    def _record(self, claim: DeliveryClaim, result: PostResult, outcome: str) -> WebhookDelivery:
        return WebhookDelivery(
            webhook_id=claim.delivery_id,
            event=claim.event,
            attempt=claim.claims,
            at=datetime.now(tz=UTC),
            url=claim.url,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
            outcome=outcome,
        )

    def _lost_record(self, claim: DeliveryClaim, attempt: int) -> WebhookDelivery:
        started = claim.previous_claim_ms or codec.now_ms()
        return WebhookDelivery(
            webhook_id=claim.delivery_id,
            event=claim.event,
            attempt=attempt,
            at=codec.from_ms(started),
            url=claim.url,
            error="no outcome recorded: the notifier stopped during this attempt",
            duration_ms=0.0,
            outcome="retrying",
        )

    async def _record_all(
        self,
        claim: DeliveryClaim,
        records: list[WebhookDelivery],
        retry_at: int | None,
        body: str | None,
    ) -> None:
        for wait in (0.1, 0.5, 2.0, None):
            try:
                await deliveries.record_delivery(
                    self.conn, claim, records, retry_at_ms=retry_at, body=body
                )
                return
            except Exception as exc:
                if wait is None:
                    raise  # the lease redelivers it
                logger.warning("cannot record delivery %s (%s)", claim.delivery_id, exc)
                await asyncio.sleep(wait)

    async def _interrupted(self, claim: DeliveryClaim) -> None:
        """Shutdown cut an attempt short: record it and make the delivery due now."""
        record = self._record(
            claim, PostResult(None, "interrupted: the notifier shut down", 0.0), "retrying"
        )
        with contextlib.suppress(Exception):
            await asyncio.shield(
                deliveries.record_delivery(self.conn, claim, [record], retry_at_ms=codec.now_ms())
            )

    async def _drain(self) -> None:
        if not self.running:
            return
        logger.info("outbox draining %d deliveries", len(self.running))
        stuck = await end_within(list(self.running.values()), self.settings.shutdown_grace_seconds)
        if stuck:  # its lease brings the delivery back to the next notifier
            logger.error("outbox leaves %d deliveries that ignored their cancellation", len(stuck))
