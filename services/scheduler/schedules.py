"""Fire recurring schedules on their ticks (SPEC section 12), waking at the next due tick.

Any number of schedulers run this loop at once: each tick still makes one task (see
shared/schedules.py), so there is no leader to elect and none to lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from services.scheduler import wake
from shared import codec, schedules
from shared.errors import RedisUnavailable
from shared.redis import Conn
from shared.settings import Settings

logger = logging.getLogger(__name__)
IDLE_CHECK_SECONDS = 5.0  # upper bound on a sleep, in case a wake-up message was missed
ERROR_RETRY_MS = 1000
# Due ticks are read and their tasks prepared this long before their time (and created at
# it, never before): the read and the preparation are not part of a tick's lateness.
LEAD_MS = 100


async def schedule_loop(
    conn: Conn,
    stop: asyncio.Event,
    settings: Settings,
    *,
    clock: Callable[[], int] | None = None,
    after_create: schedules.AfterCreate | None = None,
) -> None:
    """Declare the @periodic schedules, then fire due ticks until `stop`; sleep until the
    next tick, cut short when a schedule is created or resumed (the wake-up channel).

    Ticks are judged by Redis's clock (by default): every scheduler agrees on when a tick
    is due, so one on a host whose clock runs ahead does not fire early."""
    if clock is None:
        await conn.server_ms()  # reads the server's clock offset

        def clock() -> int:
            return int(codec.now_ms() + conn.clock_offset_ms)

    await schedules.declare_periodic(conn, settings)
    woken = asyncio.Event()
    listener = asyncio.create_task(wake.listen(conn, woken, "schedule"))
    try:
        while not stop.is_set():
            woken.clear()
            try:
                await conn.server_ms()  # the offset is read again at most every 10 s
                fired = await schedules.fire_due(
                    conn, after_create=after_create, lead_ms=LEAD_MS, clock=clock
                )
                if fired.more:
                    continue
                next_due = fired.next_due_ms
            except RedisUnavailable as exc:  # an outage, or replicas behind: no traceback
                logger.warning("cannot fire schedules (%s); retrying", exc)
                next_due = clock() + ERROR_RETRY_MS
            except Exception:
                logger.exception("firing schedules failed; retrying")
                next_due = clock() + ERROR_RETRY_MS
            delay = (
                IDLE_CHECK_SECONDS if next_due is None else (next_due - LEAD_MS - clock()) / 1000
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
