"""The producer's own connection for single creates (shared/script_connection.py): it
recovers from what a pooled redis-py client recovers from, and keeps its deadline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from shared import transitions
from shared.errors import RedisUnavailable
from shared.producer import Producer
from shared.redis import Conn, create_redis
from shared.settings import Settings
from tests.conftest import make_settings
from tests.support.seed import assert_consistent, counts, ensure_test_types


@pytest.fixture
async def producer(conn: Conn, settings: Settings) -> AsyncIterator[Producer]:
    ensure_test_types()
    async with Producer(conn, settings) as p:
        yield p


async def test_the_lane_keeps_the_clients_timeout(producer: Producer) -> None:
    assert producer._direct._timeout == 5  # redis-py's default socket timeout
    assert producer._direct._connection.socket_timeout is None  # replaced by that deadline


async def test_a_killed_connection_is_replaced(producer: Producer, conn: Conn) -> None:
    await producer.enqueue("noop", 1)
    await conn.redis.client_kill_filter(_type="normal", skipme=True)
    await producer.enqueue("noop", 2)
    assert await counts(conn) == {"total": 2, "pending": 2}
    await assert_consistent(conn)


async def test_a_flushed_script_is_loaded_again(producer: Producer, conn: Conn) -> None:
    await conn.redis.script_flush()
    if producer.conn.use_functions:
        await conn.redis.function_flush()
    task = await producer.enqueue("noop", 1)
    assert await producer.get(task.id) == task


async def test_a_cancelled_call_leaves_the_lane_usable(producer: Producer, conn: Conn) -> None:
    await producer.enqueue("noop", 0)  # the queue is registered: the next call goes straight out
    call = asyncio.create_task(producer.enqueue("noop", 1))
    await asyncio.sleep(0)  # sent, reply not read yet
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    task = await producer.enqueue("noop", 2)
    assert (await producer.get(task.id)).payload == 2
    await assert_consistent(conn)


async def test_a_silent_server_is_a_timeout(settings: Settings) -> None:
    ensure_test_types()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads and never answers
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = make_settings(f"redis://127.0.0.1:{port}/0")
    conn = create_redis(silent, socket_timeout=0.2)
    producer = Producer(conn, silent)  # not started: SCRIPT LOAD would time out first
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisUnavailable, match=r"[Tt]imeout"):
            await producer.enqueue("noop", 1)
        assert asyncio.get_running_loop().time() - started < 2  # two tries of 0.2 s
    finally:
        await producer.aclose()
        await conn.aclose()
        server.close()
        await server.wait_closed()


BUSY = """
local t0 = redis.call('TIME')
repeat
  local t = redis.call('TIME')
until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > tonumber(ARGV[1])
"""


async def test_a_reply_past_the_deadline_is_a_timeout(settings: Settings, conn: Conn) -> None:
    ensure_test_types()
    impatient = create_redis(settings, socket_timeout=0.15)
    producer = Producer(impatient, settings)
    try:
        await producer.enqueue("noop", 1)  # connected, script loaded
        busy = asyncio.create_task(conn.redis.eval(BUSY, 0, 700_000))  # Redis busy 0.7 s
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisUnavailable, match=r"[Tt]imeout"):
            await producer.enqueue("noop", 2)
        assert asyncio.get_running_loop().time() - started < 0.6  # two tries of 0.15 s
        await busy
        task = await producer.enqueue("noop", 3)  # and the lane works again
        assert (await producer.get(task.id)).payload == 3
    finally:
        await producer.aclose()
        await impatient.aclose()


def test_new_ids_are_random_uuid4s() -> None:
    ids = {transitions._new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_batch_of_ids_from_one_random_read_is_as_random() -> None:
    batch = transitions._new_ids(4000)
    assert len(set(batch)) == 4000 and not set(batch) & set(transitions._new_ids(4000))
    for text in batch:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # The variant digit keeps its two random bits: each of 8, 9, a, b about a quarter.
    for digit in "89ab":
        assert 800 < sum(1 for text in batch if text[19] == digit) < 1200
    # Every other hex digit but the version's is uniform too (a slicing slip would pin one).
    for position in (0, 7, 9, 15, 20, 35):
        assert len({text[position] for text in batch}) == 16, position
