"""Subscribing to `task_events` (SPEC section 6) and other channels: one reader, or one shared
subscription per process fanned out to many local readers.

A pub/sub subscription holds a pooled Redis connection for as long as it lives, so a process
that gives each reader its own (an SSE stream, say) runs out of connections for everything
else. `Fanout` keeps one subscription and hands each message, still raw JSON, to every local
listener; a listener that only wants some messages can skip the rest without decoding them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from shared.errors import RedisUnavailable
from shared.keys import EVENTS_CHANNEL
from shared.redis import Conn, guarded

logger = logging.getLogger(__name__)

# A raw message, or None: the subscription was lost or renewed, so messages may be missing.
Listener = Callable[[str | None], None]

FEED_BACKLOG = 1000  # messages a Feed holds for a reader before it gives up on that reader
FIRST_RETRY_SECONDS = 0.2  # first pause before subscribing again, doubling up to the max
MAX_RETRY_SECONDS = 5.0
STOP_RECHECK_SECONDS = 0.5
_NO_RETRY = Retry(NoBackoff(), 0, supported_errors=())  # not even the reconnect before raising


async def _messages(conn: Conn, channel: str) -> AsyncGenerator[str | None, None]:
    """Raw messages on `channel`, and None each time Redis confirms the subscription.

    The connection gets no retries while it is subscribed. With them, redis-py reconnects and
    re-subscribes by itself: what was published meanwhile is lost without a word, and a task
    cancelled during that reconnect can miss its cancellation and never end (seen with
    redis-py 8.1). Without them a drop ends the iteration with an error, and the caller
    subscribes again knowing that messages may be missing. A second confirmation (None after
    the first) still means a silent re-subscription, should redis-py ever make one.
    """
    pubsub = conn.redis.pubsub()
    pooled_retry = None
    try:
        if conn.topology == "cluster":
            # A cluster's pub/sub picks its node (the channel's slot) as it subscribes.
            await guarded(pubsub.subscribe(channel))
            assert pubsub.connection is not None
            pooled_retry, pubsub.connection.retry = pubsub.connection.retry, _NO_RETRY
        else:
            await guarded(pubsub.connect())
            assert pubsub.connection is not None
            pooled_retry, pubsub.connection.retry = pubsub.connection.retry, _NO_RETRY
            await guarded(pubsub.subscribe(channel))
        async for message in pubsub.listen():
            kind = message.get("type")
            if kind == "message":
                yield str(message["data"])
            elif kind == "subscribe":
                yield None
    finally:
        if pooled_retry is not None and pubsub.connection is not None:
            pubsub.connection.retry = pooled_retry  # it goes back to the pool as it came
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def subscribe(
    conn: Conn, channel: str = EVENTS_CHANNEL, *, subscribed: asyncio.Event | None = None
) -> AsyncIterator[str]:
    """Yield raw JSON messages published on a channel until the caller stops iterating.

    The subscription starts with the first `anext`. `subscribed`, when given, is set once Redis
    has confirmed it (a message published after that is delivered) and cleared when it ends.
    """
    try:
        async with contextlib.aclosing(_messages(conn, channel)) as messages:
            async for raw in messages:
                if raw is not None:
                    yield raw
                elif subscribed is not None:
                    subscribed.set()
    finally:
        if subscribed is not None:
            subscribed.clear()


class Feed:
    """One reader's share of a Fanout: the messages it wants, in a bounded queue.

    Use it as the Fanout's listener. It keeps the messages containing `match` (all of them
    when `match` is None): a substring test on the raw JSON, so a reader decodes only
    candidates and must still check what it decodes. A reader that falls `backlog` messages
    behind, or whose subscription was lost, is ended: it has missed messages and must start
    over. Dropping it keeps its backlog from growing without bound or holding back the others.
    """

    def __init__(self, match: str | None = None, backlog: int = FEED_BACKLOG) -> None:
        self.match, self.backlog = match, backlog
        self.reason: str | None = None  # why the feed ended; None while it runs
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()  # something queued, or the feed ended

    def __call__(self, raw: str | None) -> None:
        if self.reason is not None:
            return
        if raw is None:
            self.end("the subscription was lost; messages may be missing")
        elif self.match is None or self.match in raw:
            if len(self._queue) >= self.backlog:
                self.end(f"this reader fell more than {self.backlog} messages behind")
            else:
                self._queue.append(raw)
                self._ready.set()

    def end(self, reason: str) -> None:
        """Stop the feed: what it still holds is dropped and `get` answers None from now on."""
        if self.reason is None:
            self.reason = reason
            self._queue.clear()
            self._ready.set()

    async def get(self, timeout: float | None = None) -> str | None:
        """The next message, or None once the feed has ended; TimeoutError after `timeout`."""
        if not self._queue and self.reason is None:
            async with asyncio.timeout(timeout):
                while not self._queue and self.reason is None:
                    self._ready.clear()
                    await self._ready.wait()
        return self._queue.popleft() if self._queue else None


class Fanout:
    """One subscription to a channel for the whole process, handed to any number of listeners.

    Listeners are plain callbacks run on the reader's task, so each must be quick and never
    block: queue the message (a Feed) or note it. When the subscription is lost or renewed
    every listener gets None; the reader then subscribes again, backing off while Redis is away.

    `start()` it for as long as the process lives and `aclose()` it at the end, or build it with
    `on_demand=True` and use `open()`/`close()`: the subscription then lives only while a
    listener is open (an idle API process receives no events at all).
    """

    def __init__(self, conn: Conn, channel: str = EVENTS_CHANNEL, *, on_demand: bool = False):
        self.conn, self.channel, self.on_demand = conn, channel, on_demand
        self.subscribed = asyncio.Event()  # set while Redis confirms the subscription
        self._listeners: tuple[Listener, ...] = ()  # replaced, never mutated: safe to iterate
        self._reader: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None  # the last reader, being stopped

    def add(self, listener: Listener) -> None:
        self._listeners = (*self._listeners, listener)

    def remove(self, listener: Listener) -> None:
        self._listeners = tuple(other for other in self._listeners if other is not listener)

    def start(self) -> None:
        """Start the reader, unless it runs already."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._run(), name=f"fanout {self.channel}")

    async def open(self, listener: Listener, timeout: float) -> None:
        """Add `listener` and return once the subscription is confirmed, so every message
        published from then on reaches it. RedisUnavailable (listener removed) when Redis does
        not confirm within `timeout` seconds or the attempt fails."""
        self.add(listener)
        try:
            if self._stopping is not None:
                # One subscription at a time (they share `subscribed`): let the last one end.
                await asyncio.shield(self._stopping)
                self._stopping = None
            self.start()
            attempt = _Attempt()
            self.add(attempt)
            try:
                async with asyncio.timeout(timeout):
                    await attempt.settled(self.subscribed)
            except TimeoutError:
                raise RedisUnavailable(
                    f"no subscription to {self.channel} within {timeout}s"
                ) from None
            finally:
                self.remove(attempt)
            if not self.subscribed.is_set():
                raise RedisUnavailable(f"cannot subscribe to {self.channel}")
        except BaseException:
            self.close(listener)
            raise

    def close(self, listener: Listener) -> None:
        """Remove `listener`; in on-demand mode, the last one out ends the subscription."""
        self.remove(listener)
        if self.on_demand and not self._listeners and self._reader is not None:
            self._stopping = asyncio.create_task(_stop(self._reader))
            self._reader = None

    async def aclose(self) -> None:
        """End the subscription and tell every listener (they see the subscription lost)."""
        for task in (self._reader, self._stopping):
            if task is not None:
                await _stop(task)
        self._reader = self._stopping = None
        self._dispatch(None)

    async def _run(self) -> None:
        pause = FIRST_RETRY_SECONDS
        while True:
            try:
                async with contextlib.aclosing(_messages(self.conn, self.channel)) as messages:
                    async for raw in messages:
                        if raw is not None:
                            self._dispatch(raw)
                            # Let readers take it before the next one: a burst already in the
                            # socket buffer would otherwise fill every queue before any reader ran.
                            await asyncio.sleep(0)
                        elif self.subscribed.is_set():
                            logger.warning("%s subscription renewed after a drop", self.channel)
                            self._dispatch(None)
                        else:
                            self.subscribed.set()
                            pause = FIRST_RETRY_SECONDS
            except (RedisUnavailable, RedisError, OSError) as exc:
                logger.warning("%s subscription lost (%s); retrying", self.channel, exc)
            except Exception:
                logger.exception("%s listener failed; restarting it", self.channel)
            finally:
                self.subscribed.clear()
            self._dispatch(None)
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_SECONDS)

    def _dispatch(self, raw: str | None) -> None:
        for listener in self._listeners:
            try:
                listener(raw)
            except Exception:  # one broken listener must not starve the others
                logger.exception("a %s listener failed", self.channel)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended, cancelling again while it runs on: on Python
    3.11 `asyncio.wait_for`, which redis-py awaits on every command it sends, can swallow a
    cancellation (CPython gh-86296), and a reader that missed it would subscribe for ever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=STOP_RECHECK_SECONDS)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


class _Attempt:
    """Settles when the subscription is confirmed or an attempt at it fails (None arrives)."""

    def __init__(self) -> None:
        self.failed = asyncio.Event()

    def __call__(self, raw: str | None) -> None:
        if raw is None:
            self.failed.set()

    async def settled(self, subscribed: asyncio.Event) -> None:
        if subscribed.is_set():
            return
        waits = {asyncio.ensure_future(event.wait()) for event in (subscribed, self.failed)}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
