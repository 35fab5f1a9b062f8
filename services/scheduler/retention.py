"""Delete finished tasks after RESULT_TTL_SECONDS (keeping the counters exact), and the
heartbeat entries of task-less instances that died without saying so."""

from __future__ import annotations

import logging

from shared import heartbeats, queues, transitions
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.settings import Settings

logger = logging.getLogger(__name__)
# Instances that hold no tasks: nothing to recover, so nothing else ever drops their entry.
# Workers and notifiers are forgotten by recovery once their tasks are back (recover.py).
TASKLESS_SERVICES = ("api", "scheduler", "dashboard")
# Long past DEAD_AFTER_SECONDS: health stopped counting them long ago, and an instance
# stalled for so long and then alive again is back at its next beat anyway.
HEARTBEAT_GRACE_SECONDS = 3600.0


async def purge_once(conn: Conn) -> int:
    """Purge every queue's expired tasks; a queue that cannot be reached (its shard failing
    over or down) waits for the next pass and holds back no other queue."""
    total = 0
    for name in await queues.known(conn):
        try:
            while (purged := await transitions.purge_expired(conn, queue=name)) > 0:
                total += purged
        except RedisUnavailable as exc:
            logger.warning("cannot purge queue %s now (%s)", name, exc)
    if total:
        logger.info("purged %d expired tasks", total)
    return total


async def prune_heartbeats(conn: Conn, settings: Settings) -> int:
    """Drop entries of api, scheduler and dashboard instances silent for the grace period."""
    grace = max(HEARTBEAT_GRACE_SECONDS, settings.dead_after_seconds * 10)
    pruned = 0
    for service in TASKLESS_SERVICES:
        dead = await heartbeats.prune_dead(conn, service, grace)
        if dead:
            logger.info("forgot %d %s instances silent for %.0fs", len(dead), service, grace)
        pruned += len(dead)
    return pruned


async def retention_once(conn: Conn, settings: Settings) -> None:
    """One retention pass: expired tasks, then dead instances' heartbeat entries."""
    await purge_once(conn)
    await prune_heartbeats(conn, settings)
