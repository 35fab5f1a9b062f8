"""Redeliver tasks whose consumer is gone: by missing heartbeat (fast) or expired lease (safe)."""

from __future__ import annotations

import logging

from shared import heartbeats, queries, transitions
from shared.redis import Conn
from shared.settings import Settings

logger = logging.getLogger(__name__)
CONSUMER_SERVICES = ("worker", "notifier")


async def recover_once(conn: Conn, settings: Settings) -> int:
    """One pass: tasks of dead instances, then tasks whose lease deadline passed."""
    recovered = 0
    for service in CONSUMER_SERVICES:
        for instance in await heartbeats.dead_instances(conn, service, settings.dead_after_seconds):
            for task_id in await heartbeats.held_tasks(conn, instance):
                reply = await transitions.fail(
                    conn,
                    task_id,
                    None,
                    f"worker lost: {instance} stopped sending heartbeats",
                    settings,
                    mode=f"lost:{instance}",
                )
                recovered += _log(task_id, reply)
            await heartbeats.forget(conn, service, instance)
    expired = await queries.expired_leases(conn)
    for task_id in expired:
        reply = await transitions.fail(conn, task_id, None, "lease expired", settings, mode="lease")
        recovered += _log(task_id, reply)
    return recovered


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
