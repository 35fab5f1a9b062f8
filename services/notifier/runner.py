"""The notifier service: email and webhook tasks (lane "notify") plus completion webhooks.

Tasks come through the shared Consumer (leases, heartbeat as service "notifier", SIGTERM
drain, recovery by the scheduler); completion webhooks come from the outbox loop. Both share
one SMTP pool and one HTTP client, the only ones in the system (SPEC section 1).
"""

from __future__ import annotations

import asyncio
import socket

from services.notifier import signing
from services.notifier.outbox import Outbox
from services.notifier.smtp import Mailer, SmtpMailer
from services.notifier.tasks import NotifyHandlers
from services.notifier.webhooks import HttpPoster, Poster
from shared import health, tracing
from shared.consumer import Consumer
from shared.keys import Lane
from shared.queue_selection import QueueSelection
from shared.redis import Conn, connect
from shared.runtime import stop_event_on_signals
from shared.settings import Settings

SERVICE = "notifier"


async def main(settings: Settings) -> None:
    signing.secrets_from(settings)  # a malformed or shared secret fails at start
    stop = stop_event_on_signals()
    async with connect(settings, stop=stop, service=SERVICE) as conn:
        await health.warn_about_redis(conn, SERVICE)
        with tracing.configured(settings, SERVICE):  # SPEC section 13: with OTEL_* set
            await run_notifier(conn, settings, stop)


async def run_notifier(
    conn: Conn,
    settings: Settings,
    stop: asyncio.Event,
    *,
    mailer: Mailer | None = None,
    poster: Poster | None = None,
    name: str | None = None,
) -> None:
    """Run tasks and deliveries until `stop` is set; a given mailer or poster stays open."""
    completion_secrets, task_secrets = signing.secrets_from(settings)
    own_mailer, own_poster = mailer is None, poster is None
    mailer = mailer or SmtpMailer(settings)
    poster = poster or HttpPoster(settings)
    handlers = NotifyHandlers(settings, mailer, poster, task_secrets)
    consumer = Consumer(
        conn,
        settings,
        service=SERVICE,
        lane=Lane.NOTIFY,
        name=name or settings.instance_name or f"Notifier {socket.gethostname()}",
        concurrency=settings.notifier_concurrency,
        lookup=handlers.lookup,
        types=NotifyHandlers.TYPES,
        queues=QueueSelection("all"),  # SPEC section 9: the notify lane of every queue
    )
    outbox = Outbox(
        conn, settings, poster, completion_secrets, concurrency=settings.notifier_concurrency
    )
    try:
        await asyncio.gather(consumer.run(stop), outbox.run(stop))
    finally:
        if own_mailer:
            await mailer.aclose()
        if own_poster:
            await poster.aclose()
