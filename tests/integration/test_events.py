"""`shared.events` against a real Redis: the subscribed signal, and a shared subscription that
reports every gap (a dropped connection), however redis-py would have hidden it."""

from __future__ import annotations

import asyncio

from services.dashboard import hub as hub_module
from shared.events import Fanout, subscribe
from shared.keys import EVENTS_CHANNEL
from shared.redis import Conn
from shared.settings import Settings
from tests.support.pubsub import subscribers
from tests.support.waiting import wait_until


async def test_subscribe_signals_once_redis_has_confirmed(conn: Conn) -> None:
    subscribed = asyncio.Event()
    messages = subscribe(conn, "tq:test:channel", subscribed=subscribed)
    first = asyncio.ensure_future(anext(messages))
    await asyncio.wait_for(subscribed.wait(), 5)
    assert await subscribers(conn, "tq:test:channel") == 1  # Redis counts it already
    await conn.redis.publish("tq:test:channel", "hello")
    assert await asyncio.wait_for(first, 5) == "hello"
    await messages.aclose()  # type: ignore[attr-defined]
    assert not subscribed.is_set()


async def test_fanout_hands_every_message_to_every_listener_and_reports_gaps(conn: Conn) -> None:
    fanout = Fanout(conn)
    seen: tuple[list[str | None], list[str | None]] = ([], [])
    for listener in seen:
        fanout.add(listener.append)
    fanout.start()
    try:
        await asyncio.wait_for(fanout.subscribed.wait(), 5)
        await conn.redis.publish(EVENTS_CHANNEL, "before")
        await wait_until(lambda: _has(seen[1], "before"), message="the first message")
        # What is published while the connection is down is lost: the listeners are told so
        # (None) before the next message, and the subscription comes back by itself.
        await conn.redis.client_kill_filter(_type="pubsub")
        await wait_until(lambda: _has(seen[1], None), message="the gap to be reported")
        await asyncio.wait_for(fanout.subscribed.wait(), 5)
        await conn.redis.publish(EVENTS_CHANNEL, "after")
        await wait_until(lambda: _has(seen[1], "after"), message="messages after the gap")
        assert seen[0] == seen[1] == ["before", None, "after"]
        assert await subscribers(conn, EVENTS_CHANNEL) == 1
    finally:
        await fanout.aclose()
    assert not fanout.subscribed.is_set() and seen[0][-1] is None  # told it ended


async def _has(messages: list[str | None], wanted: str | None) -> bool:
    return wanted in messages


async def _resync(page: hub_module.Client) -> None:
    while await page.queue.get() != hub_module.RESYNC:
        pass  # the update frame of the first tick


async def test_the_dashboard_resyncs_its_pages_when_its_subscription_drops(
    conn: Conn, settings: Settings
) -> None:
    """Events published while the hub's connection is down are lost, even when redis-py
    re-subscribes by itself (as it did, silently): every page must re-read (RESYNC), not go on
    believing it is up to date."""
    hub = hub_module.Hub(conn, settings, tick_seconds=60)  # no tick frames in the way
    page = hub_module.Client()
    hub.clients.add(page)
    stop = asyncio.Event()
    runner = asyncio.create_task(hub.run(stop))
    try:
        await asyncio.wait_for(hub.subscribed.wait(), 5)
        await conn.redis.client_kill_filter(_type="pubsub")
        await asyncio.wait_for(_resync(page), 5)
    finally:
        stop.set()
        await runner
