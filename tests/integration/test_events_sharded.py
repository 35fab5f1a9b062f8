"""EVENTS_MODE on a real Redis: task events on each queue's sharded channel (SPUBLISH), on
`task_events`, or on both; and every reader of events (the shared subscription, the
producer's `wait`, the API's streams) following the queues' channels."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from services.api.app import create_app
from shared import codec, transitions
from shared.errors import RedisUnavailable
from shared.events import ShardedFanout, subscribe, task_events
from shared.keys import EVENTS_CHANNEL, Keys
from shared.producer import Producer
from shared.redis import Conn, create_redis
from shared.settings import Settings
from shared.transitions import Outcome
from tests.conftest import make_settings
from tests.support import redis_server as rs
from tests.support.api_server import serve
from tests.support.seed import ensure_test_types
from tests.support.waiting import wait_until

MARK = "end-of-test-marker"


def _major(server: rs.RedisServer) -> int:
    return int(server.version.split(".")[0])


async def _connect(settings: Settings) -> Conn:
    conn = create_redis(settings)
    await conn.redis.flushdb()
    await conn.load_scripts()
    return conn


@pytest.fixture
def sharded_settings(redis_server: rs.RedisServer) -> Settings:
    # Tests using it are marked redis7: not run on 6.2 (its refusal has a test of its own).
    assert _major(redis_server) >= 7, "mark the test redis7"
    return make_settings(redis_server.url, events_mode="sharded")


@pytest.fixture
async def sharded(sharded_settings: Settings) -> AsyncIterator[Conn]:
    conn = await _connect(sharded_settings)
    yield conn
    await conn.aclose()


async def shard_subscribers(conn: Conn, channel: str) -> int:
    return int(dict(await conn.redis.pubsub_shardnumsub(channel))[channel])


def events_of(seen: list[str | None], event: str) -> list[str]:
    return [codec.decode_event(raw).task_id for raw in seen if raw and f'"{event}"' in raw]


async def test_sharded_mode_needs_redis_7(redis_server: rs.RedisServer) -> None:
    conn = create_redis(make_settings(redis_server.url, events_mode="sharded"))
    try:
        if _major(redis_server) >= 7:
            await conn.load_scripts()  # the library with SPUBLISH loads
            assert conn.use_functions
        else:
            with pytest.raises(RedisUnavailable, match="EVENTS_MODE=sharded needs Redis 7"):
                await conn.load_scripts()
    finally:
        await conn.aclose()


async def _classic_reader(conn: Conn) -> tuple[asyncio.Task[list[str]], Callable[[], None]]:
    """Collect what `task_events` carries until MARK arrives (published by the test last)."""
    subscribed = asyncio.Event()
    messages = subscribe(conn, EVENTS_CHANNEL, subscribed=subscribed)

    async def collect() -> list[str]:
        got = []
        async for raw in messages:
            if raw == MARK:
                return got
            got.append(raw)
        return got

    reader = asyncio.create_task(collect())
    await asyncio.wait_for(subscribed.wait(), 5)
    return reader, reader.cancel


@pytest.mark.redis7
async def test_sharded_events_reach_every_queue_reader_and_never_task_events(
    sharded: Conn, sharded_settings: Settings
) -> None:
    ensure_test_types()
    fanout = task_events(sharded)
    assert isinstance(fanout, ShardedFanout)
    seen: list[str | None] = []
    await fanout.open(seen.append, timeout=5)
    classic, stop_classic = await _classic_reader(sharded)
    try:
        async with Producer(sharded, sharded_settings) as producer:
            await producer.enqueue("noop", 1, queue="alpha")
            # A queue that did not exist when the subscription started: read within a refresh.
            await wait_until(
                lambda: _confirmed(fanout, "alpha"), message="alpha's channel subscribed"
            )
            await producer.enqueue("noop", 2, queue="beta")
            await wait_until(lambda: _confirmed(fanout, "beta"), message="beta subscribed")
            third = await producer.enqueue("noop", 3, queue="beta")
        await wait_until(
            lambda: third.id in events_of(seen, "task.created"), message="beta's next event"
        )
        assert await shard_subscribers(sharded, Keys("alpha").events_channel) == 1
        await sharded.redis.publish(EVENTS_CHANNEL, MARK)
        assert await asyncio.wait_for(classic, 5) == []  # nothing went to task_events
    finally:
        stop_classic()
        await fanout.aclose()
    assert not fanout.subscribed.is_set() and seen[-1] is None  # told it ended


def _confirmed(fanout: ShardedFanout, queue: str) -> bool:
    reader = fanout._readers.get(queue)
    return reader is not None and reader.confirmed.is_set()


@pytest.mark.redis7
async def test_both_mode_publishes_on_task_events_and_the_queue_channel(
    redis_server: rs.RedisServer,
) -> None:
    ensure_test_types()
    settings = make_settings(redis_server.url, events_mode="both")
    conn = await _connect(settings)
    fanout = task_events(conn)
    assert not isinstance(fanout, ShardedFanout)  # in `both`, the services read task_events
    sharded_seen: list[str] = []
    sharded_subscribed = asyncio.Event()

    async def read_sharded() -> None:
        sharded_only = ShardedFanout(conn)
        sharded_only.add(lambda raw: raw and sharded_seen.append(raw))
        await sharded_only.open(lambda raw: None, timeout=5, queue="gamma")
        sharded_subscribed.set()
        try:
            await asyncio.Event().wait()
        finally:
            await sharded_only.aclose()

    sharded_reader = asyncio.create_task(read_sharded())
    classic_seen: list[str | None] = []
    try:
        await asyncio.wait_for(sharded_subscribed.wait(), 5)
        await fanout.open(classic_seen.append, timeout=5)
        async with Producer(conn, settings) as producer:
            task = await producer.enqueue("noop", 1, queue="gamma")
        for seen in (classic_seen, sharded_seen):
            await wait_until(lambda seen=seen: task.id in events_of(seen, "task.created"))
    finally:
        sharded_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sharded_reader
        await fanout.aclose()
        await conn.aclose()


@pytest.mark.redis7
async def test_listeners_open_before_a_new_queue_is_subscribed_are_told_of_the_gap(
    sharded: Conn, sharded_settings: Settings
) -> None:
    """A queue's first events may go by before its subscription is confirmed (the registry
    read only every second, or its shard down): the listeners already open are told (None),
    and the one that asked for the queue, which opens only once it is subscribed, is not."""
    ensure_test_types()
    fanout = ShardedFanout(sharded)
    everything: list[str | None] = []
    await fanout.open(everything.append, timeout=5)
    assert None not in everything
    try:
        async with Producer(sharded, sharded_settings) as producer:
            await producer.enqueue("noop", 1, queue="gamma")
            await wait_until(lambda: _confirmed(fanout, "gamma"), message="gamma subscribed")
            await wait_until(lambda: None in everything, message="the gap to be reported")
            asker: list[str | None] = []
            await fanout.open(asker.append, timeout=5, queue="epsilon")
            task = await producer.enqueue("noop", 2, queue="epsilon")
            await wait_until(lambda: task.id in events_of(asker, "task.created"))
            assert None not in asker
            await wait_until(lambda: task.id in events_of(everything, "task.created"))
            assert everything.count(None) == 2  # gamma's gap and epsilon's
    finally:
        await fanout.aclose()


@pytest.mark.redis7
async def test_a_dropped_queue_subscription_is_reported_and_made_again(
    sharded: Conn, sharded_settings: Settings
) -> None:
    ensure_test_types()
    fanout = ShardedFanout(sharded)
    seen: list[str | None] = []
    await fanout.open(seen.append, timeout=5, queue="delta")
    try:
        # What is published while the connection is down is lost: the listeners are told so.
        # (Killed by id: whether CLIENT KILL TYPE pubsub counts a client with only sharded
        # subscriptions differs between Redis 7 releases.)
        assert await _kill_shard_subscribers(sharded) >= 1
        await wait_until(lambda: None in seen, message="the drop to be reported")
        # That None may be another queue's reader's (any queue in the registry has one): wait
        # for delta's own to see its drop (it re-subscribes FIRST_RETRY_SECONDS later).
        await wait_until(lambda: not _confirmed(fanout, "delta"), interval=0.005)
        await asyncio.wait_for(fanout.ready("delta"), 5)
        async with Producer(sharded, sharded_settings) as producer:
            task = await producer.enqueue("noop", 1, queue="delta")
        await wait_until(lambda: task.id in events_of(seen, "task.created"))
        assert await shard_subscribers(sharded, Keys("delta").events_channel) == 1
    finally:
        await fanout.aclose()


@pytest.mark.redis7
async def test_producer_wait_follows_the_tasks_queue_channel(
    sharded: Conn, sharded_settings: Settings
) -> None:
    ensure_test_types()
    async with Producer(sharded, sharded_settings) as producer:
        task = await producer.enqueue("noop", 1, queue="epsilon")
        waiting = asyncio.create_task(producer.wait(task.id, timeout=10))
        channel = Keys("epsilon").events_channel
        await wait_until(lambda: _shard_subscribed(sharded, channel), message="the waiter")
        assert not waiting.done()
        [claimed] = await transitions.claim(
            sharded, "work", 1, worker="Worker T", owner="w-t", lease_seconds=30, queue="epsilon"
        )
        outcome = Outcome(claimed.task.id, claimed.token, True, result={"done": 1}, queue="epsilon")
        await transitions.report_outcomes(sharded, [outcome], sharded_settings)
        done = await waiting
    assert done.status == "completed" and done.result == {"done": 1}


async def _kill_shard_subscribers(conn: Conn) -> int:
    """CLIENT KILL each client holding a sharded subscription; how many there were."""
    clients = await conn.redis.client_list()
    ids = [c["id"] for c in clients if int(c.get("ssub", 0)) > 0]
    for client_id in ids:
        await conn.redis.client_kill_filter(_id=client_id)
    return len(ids)


async def _shard_subscribed(conn: Conn, channel: str) -> bool:
    return await shard_subscribers(conn, channel) >= 1


@pytest.mark.redis7
async def test_api_streams_read_the_queue_channels(
    sharded: Conn, sharded_settings: Settings
) -> None:
    """An unfiltered stream gets every queue's events; a stream of one task subscribes to its
    queue's channel before its first line, so the task's next event reaches it."""
    ensure_test_types()
    app = create_app(sharded_settings)
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            created = await http.post(
                "/api/tasks", json={"type": "noop", "payload": {}, "queue": "zeta"}
            )
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            async with http.stream("GET", "/api/events", params={"task_id": task_id}) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                assert await shard_subscribers(sharded, Keys("zeta").events_channel) == 1
                cancelled = await http.delete(f"/api/tasks/{task_id}")
                assert cancelled.status_code == 200, cancelled.text
                async for line in lines:
                    if line.startswith("data:"):
                        assert '"task.cancelled"' in line and task_id in line
                        break
