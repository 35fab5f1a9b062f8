"""Subscribing to task events (SPEC section 6) and other channels: one reader, or one shared
subscription per process fanned out to many local readers.

Task events come on `task_events` (EVENTS_MODE classic or both) or, with EVENTS_MODE=sharded,
on each queue's own sharded channel (`ShardedFanout`: one SSUBSCRIBE per queue, on the node
that owns the queue's slot). `task_events(conn)` builds the right one.

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
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from shared import queues
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
# How often a sharded subscription looks for new queues. A queue created meanwhile has its
# first events missed by readers of every queue (a reader of one task subscribes to that
# task's queue before it reads).
QUEUE_REFRESH_SECONDS = 1.0
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
    pooled_retry = None
    # On a cluster, redis-py subscribes on the node that owns the channel's slot. (Known
    # limit: an event a primary published just before it died, not yet copied over the
    # cluster bus, reaches no subscriber on another node, and none of them can tell.)
    pubsub = conn.redis.pubsub()
    try:
        if conn.topology == "cluster":
            await guarded(pubsub.subscribe(channel))  # it connects as it subscribes
            pooled_retry = _without_retry(pubsub)
        else:
            await guarded(pubsub.connect())
            pooled_retry = _without_retry(pubsub)
            await guarded(pubsub.subscribe(channel))
        async with contextlib.aclosing(_read(pubsub, "message", "subscribe")) as messages:
            async for raw in messages:
                yield raw
    finally:
        if pooled_retry is not None and pubsub.connection is not None:
            pubsub.connection.retry = pooled_retry  # it goes back to the pool as it came
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def _sharded_messages(conn: Conn, channel: str) -> AsyncGenerator[str | None, None]:
    """As `_messages`, for a sharded channel (SSUBSCRIBE). On a cluster the subscription goes
    to the node owning the channel's slot, on a client of its own: redis-py's cluster pub/sub
    moves sharded subscriptions after a failover by itself, losing messages without a word,
    and reads its nodes by polling them in turn. The iteration ends when the node gives the
    slot up (Redis sends `sunsubscribe`), so the caller subscribes again where it went."""
    client: aioredis.Redis | None = None
    pubsub: Any  # redis-py's PubSub (untyped)
    if conn.topology == "cluster":
        # A keyed command through the cluster client first: after a failover it is what
        # learns the slot's new owner (MOVED, or the old owner unreachable).
        await guarded(conn.redis.exists(channel))
        node = conn.redis.get_node_from_key(channel)
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=1, **node.connection_kwargs
        )
        client = aioredis.Redis(connection_pool=pool)
        pubsub = client.pubsub()
    else:
        pubsub = conn.redis.pubsub()
    pooled_retry = None
    try:
        await guarded(pubsub.connect())
        pooled_retry = _without_retry(pubsub)
        await guarded(pubsub.ssubscribe(channel))
        reading = _read(pubsub, "smessage", "ssubscribe", "sunsubscribe")
        async with contextlib.aclosing(reading) as messages:
            async for raw in messages:
                yield raw
    finally:
        if client is None and pooled_retry is not None and pubsub.connection is not None:
            pubsub.connection.retry = pooled_retry  # it goes back to the pool as it came
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


def _without_retry(pubsub: Any) -> Any:
    """Take the subscribed connection's retries away (see `_messages`); returns the pool's
    own, to put back when the connection goes back to the pool."""
    assert pubsub.connection is not None
    pooled, pubsub.connection.retry = pubsub.connection.retry, _NO_RETRY
    return pooled


async def _read(
    pubsub: Any, data: str, confirmed: str, ended: str | None = None
) -> AsyncGenerator[str | None, None]:
    """A subscription's messages of kind `data`, None for each `confirmed`; it stops at
    `ended` (a sharded channel's node gave its slot up)."""
    async for message in pubsub.listen():
        kind = message.get("type")
        if kind == data:
            yield str(message["data"])
        elif kind == confirmed:
            yield None
        elif ended is not None and kind == ended:
            return


def task_events(conn: Conn, *, on_demand: bool = False) -> Fanout:
    """The process's subscription to task events, where EVENTS_MODE has them published:
    `task_events` (classic, both) or every queue's sharded channel (sharded)."""
    if conn.events_mode == "sharded":
        return ShardedFanout(conn, on_demand=on_demand)
    return Fanout(conn, EVENTS_CHANNEL, on_demand=on_demand)


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

    async def open(self, listener: Listener, timeout: float, queue: str | None = None) -> None:
        """Add `listener` and return once the subscription is confirmed, so every message
        published from then on reaches it. RedisUnavailable (listener removed) when Redis does
        not confirm within `timeout` seconds or the attempt fails. `queue`: the listener wants
        that queue's events (a sharded subscription makes sure of that queue's channel)."""
        self.add(listener)
        try:
            if self._stopping is not None:
                # One subscription at a time (they share `subscribed`): let the last one end.
                await asyncio.shield(self._stopping)
                self._stopping = None
            self.start()
            try:
                async with asyncio.timeout(timeout):
                    await self._confirm(queue, listener)
            except TimeoutError:
                raise RedisUnavailable(
                    f"no subscription to {self.channel} within {timeout}s"
                ) from None
        except BaseException:
            self.close(listener)
            raise

    async def _confirm(self, queue: str | None, listener: Listener) -> None:
        attempt = _Attempt()
        self.add(attempt)
        try:
            await attempt.settled(self.subscribed)
        finally:
            self.remove(attempt)
        if not self.subscribed.is_set():
            raise RedisUnavailable(f"cannot subscribe to {self.channel}")

    async def ready(self, queue: str | None = None) -> None:
        """Return once the subscription (for `queue`'s events) is live again after a drop."""
        await self.subscribed.wait()

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
        await _keep_subscribed(
            lambda: _messages(self.conn, self.channel),
            self.channel,
            self._dispatch,
            self.subscribed,
        )

    def _dispatch(self, raw: str | None) -> None:
        for listener in self._listeners:
            try:
                listener(raw)
            except Exception:  # one broken listener must not starve the others
                logger.exception("a %s listener failed", self.channel)


class ShardedFanout(Fanout):
    """A Fanout of every queue's task events under EVENTS_MODE=sharded: one SSUBSCRIBE per
    queue, each on the node that owns the queue's slot, so an event crosses no other shard.

    The queues are those of the registry, read again every QUEUE_REFRESH_SECONDS. A queue
    that appears later may have published its first events before its subscription was
    confirmed (for as long as the registry's shard is down, say), so the listeners already open
    are told (None) once it is: they re-read, as after any gap. A queue's subscription that
    drops (a failover, its shard down) tells every listener (None) and is
    made again where its slot went; the others go on. `subscribed` is set while every queue's
    is confirmed; `open` and `ready` with a queue wait for that queue's only, so a shard that is
    down holds back only the readers of its own queues.
    """

    def __init__(self, conn: Conn, *, on_demand: bool = False) -> None:
        super().__init__(conn, "sharded task events", on_demand=on_demand)
        self._readers: dict[str, _QueueReader] = {}
        self._listed = asyncio.Event()  # the queues were read once: each has its reader

    def reader(self, queue: str, asker: Listener | None = None) -> _QueueReader:
        """The subscription to `queue`'s channel, made now if there is none yet. `asker`, the
        listener that wants it, missed nothing of the queue: it opens once it is confirmed."""
        reader = self._readers.get(queue)
        if reader is None:
            owed: tuple[Listener, ...] = ()
            if self._listed.is_set():  # a queue found since the first listing
                owed = tuple(other for other in self._listeners if other is not asker)
            reader = self._readers[queue] = _QueueReader(self, queue, owed)
        return reader

    def note_state(self) -> None:
        """Called by a reader whose subscription was confirmed or lost."""
        if self._listed.is_set() and all(r.confirmed.is_set() for r in self._readers.values()):
            self.subscribed.set()
        else:
            self.subscribed.clear()

    async def _confirm(self, queue: str | None, listener: Listener) -> None:
        if queue is not None:
            reader = self.reader(queue, asker=listener)
            await reader.settled.wait()
            if not reader.confirmed.is_set():
                raise RedisUnavailable(f"cannot subscribe to {reader.channel}")
            return
        await self._listed.wait()
        readers = list(self._readers.values())
        await asyncio.gather(*(reader.settled.wait() for reader in readers))
        # A queue whose shard is down publishes nothing until it is back, and its reader
        # tells every listener when it subscribes again: the others are worth listening to.
        if readers and not any(reader.confirmed.is_set() for reader in readers):
            raise RedisUnavailable("cannot subscribe to any queue's task events")

    async def ready(self, queue: str | None = None) -> None:
        if queue is None:
            await self.subscribed.wait()
        else:
            await self.reader(queue).confirmed.wait()

    async def _run(self) -> None:
        try:
            while True:
                try:
                    names = await queues.known(self.conn)
                except RedisUnavailable as exc:
                    logger.warning("cannot read the queues to subscribe to (%s)", exc)
                else:
                    for name in names:
                        self.reader(name)
                    self._listed.set()
                    self.note_state()
                await asyncio.sleep(QUEUE_REFRESH_SECONDS)
        finally:
            readers, self._readers = list(self._readers.values()), {}
            self._listed.clear()
            self.subscribed.clear()
            await _stop_all([reader.task for reader in readers])


class _QueueReader:
    """One queue's sharded subscription in a ShardedFanout, made again after every drop."""

    def __init__(self, fanout: ShardedFanout, queue: str, owed: tuple[Listener, ...]) -> None:
        self.fanout, self.queue = fanout, queue
        self.owed = owed  # listeners that may have missed this queue's first events
        self.channel = fanout.conn.queue(queue).events_channel
        self.confirmed = asyncio.Event()
        self.settled = asyncio.Event()  # confirmed, or failed at least once
        self.task = asyncio.create_task(self._run(), name=f"events of queue {queue}")

    async def _run(self) -> None:
        await _keep_subscribed(
            lambda: _sharded_messages(self.fanout.conn, self.channel),
            self.channel,
            self.fanout._dispatch,
            self.confirmed,
            on_confirmed=self._on_confirmed,
            on_lost=self._on_lost,
        )

    def _on_confirmed(self, after_a_drop: bool) -> None:
        self.settled.set()
        self.fanout.note_state()
        if after_a_drop:  # what was published while it was away is missing
            self.fanout._dispatch(None)
        else:
            self._tell_owed()

    def _on_lost(self) -> None:
        self.settled.set()
        self.fanout.note_state()

    def _tell_owed(self) -> None:
        """Tell the listeners open before this queue's first subscription that its first
        events may have gone by (those still listening)."""
        owed, self.owed = self.owed, ()
        listening = self.fanout._listeners
        for listener in owed:
            if listener in listening:
                try:
                    listener(None)
                except Exception:
                    logger.exception("a %s listener failed", self.channel)


async def _keep_subscribed(
    open_messages: Callable[[], AsyncGenerator[str | None, None]],
    name: str,
    dispatch: Listener,
    confirmed: asyncio.Event,
    *,
    on_confirmed: Callable[[bool], None] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Subscribe with `open_messages()` and hand each message to `dispatch`, for ever: after a
    drop (or a node giving its slot up) `dispatch` gets None and the subscription is made
    again, backing off while Redis is away. `confirmed` is set while Redis confirms it;
    `on_confirmed(after_a_drop)` and `on_lost()` are told of each change."""
    pause, dropped = FIRST_RETRY_SECONDS, False
    while True:
        try:
            async with contextlib.aclosing(open_messages()) as messages:
                async for raw in messages:
                    if raw is not None:
                        dispatch(raw)
                        # Let readers take it before the next one: a burst already in the
                        # socket buffer would otherwise fill every queue before any reader ran.
                        await asyncio.sleep(0)
                    elif confirmed.is_set():
                        logger.warning("%s subscription renewed after a drop", name)
                        dispatch(None)
                    else:
                        confirmed.set()
                        if on_confirmed is not None:
                            on_confirmed(dropped)
                        pause = FIRST_RETRY_SECONDS
            logger.warning("%s: the node gave the slot up; subscribing again", name)
        except (RedisUnavailable, RedisError, OSError) as exc:
            logger.warning("%s subscription lost (%s); retrying", name, exc)
        except Exception:
            logger.exception("%s listener failed; restarting it", name)
        finally:
            confirmed.clear()
            if on_lost is not None:
                on_lost()
        dropped = True
        dispatch(None)
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_RETRY_SECONDS)


async def _stop_all(tasks: list[asyncio.Task[None]]) -> None:
    """`_stop` every task, and wait for all of them even while the caller is cancelled again
    (`_stop` on the caller repeats its cancel): a task left behind would subscribe for ever,
    and one nobody references any more is destroyed mid-read by the garbage collector."""
    stopping = asyncio.gather(*(_stop(task) for task in tasks))
    while not stopping.done():
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            continue


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
