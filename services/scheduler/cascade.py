"""Finish the cascades of failed or cancelled dependencies (SPEC section 11) that one script
call left unfinished: a cascade cancels at most CASCADE_BUDGET tasks per call (_lib.lua)."""

from __future__ import annotations

import logging

from shared import queues, transitions
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.settings import Settings

logger = logging.getLogger(__name__)


async def drain_once(conn: Conn, settings: Settings) -> int:
    """Drain every queue's cascade list; returns how many calls did work. A queue that cannot
    be reached waits for the next pass and holds back no other queue."""
    calls = 0
    for name in await queues.known(conn):
        try:
            while await transitions.drain_cascade(conn, settings, queue=name) > 0:
                calls += 1
        except RedisUnavailable as exc:
            logger.warning("cannot continue the cascades of queue %s now (%s)", name, exc)
    if calls:
        logger.info("continued %d cancel cascades of failed or cancelled dependencies", calls)
    return calls
