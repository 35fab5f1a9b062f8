"""Redeliver tasks whose consumer is gone: by missing heartbeat (fast) or expired lease (safe)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from shared import heartbeats, queries, queues, transitions
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.settings import Settings

logger = logging.getLogger(__name__)
CONSUMER_SERVICES = ("worker", "notifier")


class QueueOutages:
    """The queues a recovery pass could not reach (on a cluster, a shard failing over or
    down), and how long each stays untouched once it answers again.

    While a queue's shard is away no consumer can renew its leases there, so right after it
    comes back its leases look expired although their owners are alive: like Redis as a
    whole (Recoverer), such a queue is left alone for DEAD_AFTER_SECONDS."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self.away: set[str] = set()
        self.settling_until: dict[str, float] = {}

    def lost(self, queue: str, error: RedisUnavailable) -> None:
        if queue not in self.away:
            logger.warning("recovery cannot reach queue %s (%s); leaving it for now", queue, error)
        self.away.add(queue)

    def back(self, queue: str) -> None:
        self.away.discard(queue)
        self.settling_until[queue] = time.monotonic() + self.settle_seconds
        logger.warning(
            "queue %s is back; recovery waits %.1fs for its consumers to renew their leases",
            queue,
            self.settle_seconds,
        )

    def settling(self, queue: str) -> bool:
        until = self.settling_until.get(queue)
        if until is not None and time.monotonic() >= until:
            del self.settling_until[queue]
            return False
        return until is not None


async def recover_once(conn: Conn, settings: Settings, outages: QueueOutages | None = None) -> int:
    """One pass over every queue: tasks of dead instances, then tasks whose lease passed.

    Queue by queue: one that cannot be reached is left for a later pass (a dead instance is
    forgotten only once every queue it may hold tasks in was recovered) and holds back no
    other queue."""
    outages = outages or QueueOutages(settings.dead_after_seconds)
    recovered = 0
    names = await queues.known(conn)
    usable = await _usable_queues(conn, names, outages)

    async def in_each_queue(step: Callable[[str], Awaitable[int]]) -> int:
        done = 0
        for name in list(usable):
            try:
                done += await step(name)
            except RedisUnavailable as exc:
                usable.remove(name)
                outages.lost(name, exc)
        return done

    # A consumer two beats late may be dead: hand nothing more to it (its idle slots' offers
    # are withdrawn) and take back what was handed to it and is still unread, long before it
    # is declared dead. A live one re-offers at its next claim and loses nothing it started.
    suspect_after = min(settings.dead_after_seconds, 2 * settings.heartbeat_seconds)
    for service in CONSUMER_SERVICES:
        for instance in await heartbeats.dead_instances(conn, service, suspect_after):

            async def take_back(name: str, instance: str = instance) -> int:
                await heartbeats.withdraw_offers(conn, instance, queues=[name])
                messages = await heartbeats.take_inbox(conn, instance, queue=name)
                return sum([await _take_back(conn, settings, instance, m, name) for m in messages])

            recovered += await in_each_queue(take_back)
        # Dead is later than suspect: the pass above has already withdrawn its offers.
        for instance in await heartbeats.dead_instances(conn, service, settings.dead_after_seconds):

            async def fail_held(name: str, instance: str = instance) -> int:
                done = 0
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
                    done += _log(task_id, reply)
                return done

            recovered += await in_each_queue(fail_held)
            if len(usable) == len(names):
                await heartbeats.forget(conn, service, instance, names)

    async def expired(name: str) -> int:
        done = 0
        for task_id in await queries.expired_leases(conn, queue=name):
            reply = await transitions.fail(
                conn, task_id, None, "lease expired", settings, mode="lease", queue=name
            )
            done += _log(task_id, reply)
        return done

    return recovered + await in_each_queue(expired)


async def _usable_queues(conn: Conn, names: list[str], outages: QueueOutages) -> list[str]:
    """The queues this pass may touch: not away (one EXISTS asks whether an away one is
    back, and a queue back is left alone while it settles)."""
    usable = []
    for name in names:
        if name in outages.away:
            if not await queues.reachable(conn, name):
                continue
            outages.back(name)
        if not outages.settling(name):
            usable.append(name)
    return usable


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
    if reply[0] in ("recovered", "retrying", "failed", "cancelled"):
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
        self.queue_outages = QueueOutages(settings.dead_after_seconds)  # one shard's, on a cluster

    async def tick(self) -> int:
        try:
            await heartbeats.check_reachable(self.conn)
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
            return await recover_once(self.conn, self.settings, self.queue_outages)
        except Exception:
            self.outage = True
            raise
