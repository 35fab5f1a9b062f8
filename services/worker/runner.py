"""The worker service: a Consumer of the "work" lane with handlers from the registry."""

from __future__ import annotations

import socket
from collections.abc import Callable

from shared import health, plugins, registry, tracing
from shared.consumer import Consumer
from shared.keys import Lane
from shared.queue_selection import QueueSelection
from shared.redis import connect
from shared.registry import Handler
from shared.runtime import stop_event_on_signals
from shared.settings import Settings

SERVICE = "worker"


def handler_for(task_type: str) -> Handler | None:
    entry = registry.get(task_type)
    return entry.handler if entry is not None and entry.lane == Lane.WORK else None


async def main(settings: Settings, on_backlog: Callable[[bool], None] | None = None) -> None:
    plugins.load_task_modules(settings)
    stop = stop_event_on_signals()
    name = settings.instance_name or f"Worker {socket.gethostname()}"
    async with connect(settings, stop=stop, service=SERVICE) as conn:
        await health.warn_about_redis(conn, SERVICE)
        consumer = Consumer(
            conn,
            settings,
            service=SERVICE,
            lane=Lane.WORK,
            name=name,
            concurrency=settings.worker_concurrency,
            lookup=handler_for,
            queues=QueueSelection.parse(settings.worker_queues),
            on_backlog=on_backlog,
        )
        with tracing.configured(settings, SERVICE):  # SPEC section 13: with OTEL_* set
            await consumer.run(stop)
