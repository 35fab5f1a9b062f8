"""Move due scheduled tasks and due retries to the ready queues, waking at the next due time."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.scheduler import wake
from shared import codec, queues, transitions
from shared.errors import RedisUnavailable
from shared.redis import Conn

logger = logging.getLogger(__name__)
IDLE_CHECK_SECONDS = 5.0  # upper bound on a sleep, in case a wake-up message was missed
UNREACHABLE_RETRY_MS = 1000  # a queue that could not be reached is tried again this soon


async def promote_loop(conn: Conn, stop: asyncio.Event, lead_seconds: float = 0.0) -> None:
    """Sleep until `lead_seconds` before the earliest due time; a wake-up message cuts the
    sleep short. The consumers wait out the lead, so tasks start at their due time."""
    woken = asyncio.Event()
    listener = asyncio.create_task(wake.listen(conn, woken, "promotion"))
    try:
        while not stop.is_set():
            woken.clear()
            try:
                moved, next_due = await promote_all(conn, lead_seconds)
                if moved:
                    logger.info("promoted %d due tasks", moved)
                    continue  # a full batch may mean more are due
            except Exception:
                logger.exception("promote failed; retrying")
                next_due = codec.now_ms() + 1000
            delay = (
                IDLE_CHECK_SECONDS
                if next_due is None
                else (next_due - codec.now_ms()) / 1000 - lead_seconds
            )
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        wake.either(woken, stop), timeout=min(delay, IDLE_CHECK_SECONDS)
                    )
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def promote_all(conn: Conn, lead_seconds: float) -> tuple[int, int | None]:
    """One promote_due call per queue; (moved in all, earliest next due ms or None).

    A queue that cannot be reached (on a cluster, its shard failing over or down) is tried
    again in UNREACHABLE_RETRY_MS and holds back no other queue; RedisUnavailable only when
    none answered."""
    moved, earliest = 0, None
    unreachable: dict[str, RedisUnavailable] = {}
    names = await queues.known(conn)
    for name in names:
        try:
            count, due = await transitions.promote_due(conn, lead_seconds=lead_seconds, queue=name)
        except RedisUnavailable as exc:
            unreachable[name] = exc
            continue
        moved += count
        if due is not None and (earliest is None or due < earliest):
            earliest = due
    if unreachable:
        if len(unreachable) == len(names):
            raise next(iter(unreachable.values()))
        logger.warning("cannot promote in queue(s) %s now; retrying", ", ".join(unreachable))
        retry_at = codec.now_ms() + UNREACHABLE_RETRY_MS
        earliest = retry_at if earliest is None else min(earliest, retry_at)
    return moved, earliest
