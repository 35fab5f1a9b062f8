"""The scheduler: promotion of due tasks, recovery of lost ones, retention, and a heartbeat.

Every move is an idempotent script, so a second scheduler running at once is harmless.
"""

from __future__ import annotations

import asyncio
import os
import socket

from services.scheduler.cascade import drain_once
from services.scheduler.promote import promote_loop
from services.scheduler.recover import Recoverer
from services.scheduler.retention import retention_once
from services.scheduler.schedules import schedule_loop
from shared import health, heartbeats, liveness, plugins
from shared.redis import Conn, connect
from shared.runtime import every, instance_id, stop_event_on_signals
from shared.settings import Settings

SERVICE = "scheduler"
RECOVER_EVERY_SECONDS = 0.5
RETENTION_EVERY_SECONDS = 30.0
CASCADE_EVERY_SECONDS = 1.0  # how soon a cascade too large for one script call goes on


async def main(settings: Settings) -> None:
    stop = stop_event_on_signals()
    plugins.load_task_modules(settings)  # their @periodic schedules are declared at start
    async with connect(settings, stop=stop, service=SERVICE) as conn:
        await health.warn_about_redis(conn, SERVICE)
        await run_scheduler(conn, settings, stop)


async def run_scheduler(conn: Conn, settings: Settings, stop: asyncio.Event) -> None:
    iid = instance_id(SERVICE)
    info = {"pid": os.getpid(), "host": socket.gethostname()}

    async def beat() -> None:
        # Liveness first, whether or not Redis answers; and a beat that Redis never answers
        # is cut short, so the loop (and the liveness it proves) goes on through an outage.
        liveness.touch(SERVICE)
        async with asyncio.timeout(max(settings.heartbeat_seconds * 2, 1.0)):
            await heartbeats.beat(conn, SERVICE, iid, info, settings.heartbeat_seconds * 5)

    try:
        await asyncio.gather(
            promote_loop(conn, stop, settings.schedule_lead_seconds),
            schedule_loop(conn, stop, settings),
            every(stop, RECOVER_EVERY_SECONDS, Recoverer(conn, settings).tick, "recover"),
            every(
                stop, RETENTION_EVERY_SECONDS, lambda: retention_once(conn, settings), "retention"
            ),
            every(stop, CASCADE_EVERY_SECONDS, lambda: drain_once(conn, settings), "cascade"),
            every(stop, settings.heartbeat_seconds, beat, "heartbeat"),
        )
    finally:
        await heartbeats.leave(conn, SERVICE, iid)
