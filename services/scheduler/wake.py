"""What the scheduler's loops wait on: an earlier due time announced on the wake-up channel,
or the end of the service."""

from __future__ import annotations

import asyncio
import logging

from shared.events import subscribe
from shared.keys import SCHEDULER_WAKE_CHANNEL
from shared.redis import Conn

logger = logging.getLogger(__name__)


async def either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Return once `first` or `second` is set."""
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


async def listen(conn: Conn, woken: asyncio.Event, what: str) -> None:
    """Set `woken` whenever a script announces an earlier due time (of `what`: tasks, schedule
    ticks), and after a lost subscription (something may have been announced meanwhile);
    resubscribe on errors."""
    while True:
        try:
            async for _ in subscribe(conn, SCHEDULER_WAKE_CHANNEL):
                woken.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s wake-up subscription lost (%s); resubscribing", what, exc)
            woken.set()
            await asyncio.sleep(1)
