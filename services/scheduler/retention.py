"""Delete finished tasks after RESULT_TTL_SECONDS, keeping the counters exact."""

from __future__ import annotations

import logging

from shared import transitions
from shared.redis import Conn

logger = logging.getLogger(__name__)


async def purge_once(conn: Conn) -> int:
    total = 0
    while (purged := await transitions.purge_expired(conn)) > 0:
        total += purged
    if total:
        logger.info("purged %d expired tasks", total)
    return total
