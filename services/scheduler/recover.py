"""Redeliver tasks whose consumer is gone: by missing heartbeat (fast) or expired lease (safe)."""

from __future__ import annotations

import logging
import time

from shared import heartbeats, queries, queues, transitions
from shared.redis import Conn, guarded
from shared.settings import Settings

logger = logging.getLogger(__name__)
CONSUMER_SERVICES = ("worker", "notifier")


async def recover_once(conn: Conn, settings: Settings) -> int:
    """One pass over every queue: tasks of dead instances, then tasks whose lease passed."""
    recovered = 0
    names = await queues.known(conn)
    # A consumer two beats late may be dead: hand nothing more to it (its idle slots' offers
    # are withdrawn) and take back what was handed to it and is still unread, long before it
    # is declared dead. A live one re-offers at its next claim and loses nothing it started.
    suspect_after = min(settings.dead_after_seconds, 2 * settings.heartbeat_seconds)
    for service in CONSUMER_SERVICES:
        for instance in await heartbeats.dead_instances(conn, service, suspect_after):
            await heartbeats.withdraw_offers(conn, instance, queues=names)
            for name in names:
                for message in await heartbeats.take_inbox(conn, instance, queue=name):
                    recovered += await _take_back(conn, settings, instance, message, name)
        # Dead is later than suspect: the pass above has already withdrawn its offers.
        for instance in await heartbeats.dead_instances(conn, service, settings.dead_after_seconds):
            for name in names:
                for task_id in await heartbeats.held_tasks(conn, instance, queue=name):
                    reply = await transitions.fail(
                        conn,
                        task_id,
                        None,
                        f"worker lost: {instance} stopped sending heartbeats",
                        settings,
                        mode=f"lost:{instance}",
                        queue=name,
                    )
                    recovered += _log(task_id, reply)
            await heartbeats.forget(conn, service, instance, names)
    for name in names:
        for task_id in await queries.expired_leases(conn, queue=name):
            reply = await transitions.fail(
                conn, task_id, None, "lease expired", settings, mode="lease", queue=name
            )
            recovered += _log(task_id, reply)
    return recovered


async def _take_back(
    conn: Conn, settings: Settings, instance: str, message: str, queue: str
) -> int:
    """Requeue one task handed over to a consumer that never read it."""
    try:
        item = transitions.handed_over(message, instance, queue)
    except Exception:  # unreadable: its lease runs out and recovers it
        return 0
    if item is None:
        return 0  # the seal of an inbox closed at shutdown
    reply = await transitions.fail(
        conn,
        item.task.id,
        item.token,
        f"worker lost: {instance} is late with its heartbeat and did not read the task",
        settings,
        mode=f"lost:{instance}",
        queue=queue,
    )
    return _log(item.task.id, reply)


def _log(task_id: str, reply: list[str]) -> int:
    if reply[0] in ("recovered", "retrying", "failed"):
        logger.warning(
            "recovered task %s from a lost consumer -> %s",
            task_id,
            reply[0],
            extra={"task_id": task_id},
        )
        return 1
    return 0


class Recoverer:
    """Runs `recover_once` passes, blind for a while after it could not reach Redis.

    While Redis is away (restart, crash, partition) no consumer can beat, so right after it
    comes back every heartbeat and many leases look stale although their owners are alive.
    After a failed pass, recovery waits DEAD_AFTER_SECONDS (live consumers beat and renew
    their leases meanwhile) before it declares anyone dead, so a live worker's task is never
    taken from it by an outage.
    """

    def __init__(self, conn: Conn, settings: Settings) -> None:
        self.conn, self.settings = conn, settings
        self.outage = False
        self.blind_until = 0.0

    async def tick(self) -> int:
        try:
            await guarded(self.conn.redis.ping())
        except Exception:
            self.outage = True
            raise
        if self.outage:
            self.outage = False
            self.blind_until = time.monotonic() + self.settings.dead_after_seconds
            logger.warning(
                "redis is back; recovery waits %.1fs for live consumers to beat",
                self.settings.dead_after_seconds,
            )
        if time.monotonic() < self.blind_until:
            return 0
        try:
            return await recover_once(self.conn, self.settings)
        except Exception:
            self.outage = True
            raise
