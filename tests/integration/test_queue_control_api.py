"""shared.queue_control against a real Redis: what pause, resume and set_limits store and
announce, reading it back for one queue or many, and limits refused before anything is
written."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from redis.exceptions import ResponseError

from shared import queue_control
from shared.errors import ValidationFailed
from shared.keys import LANES
from shared.queue_control import QueueConfig, QueueLimits, RateLimit
from shared.redis import Conn
from tests.support.control_channel import assert_silent, control_messages, next_message


async def test_set_limits_stores_announces_and_reads_back(conn: Conn) -> None:
    limits = QueueLimits(rate_limit=RateLimit(tasks=10, per_seconds=1.5), max_concurrency=4)
    async with control_messages(conn) as messages:
        config = await queue_control.set_limits(conn, "default", limits)
        assert await next_message(messages) == {"queue": "default", "event": "limits"}
        await assert_silent(conn, messages)
    expected = QueueConfig(rate_limit=RateLimit(tasks=10, per_seconds=1.5), max_concurrency=4)
    assert config == expected
    assert await queue_control.get_config(conn, "default") == expected
    assert await conn.redis.hgetall(conn.keys.config) == {
        "rate_tasks": "10",
        "rate_seconds": "1.5",
        "max_concurrency": "4",
    }

    # A PUT replaces both limits: what it leaves out (or sends as null) is removed.
    config = await queue_control.set_limits(conn, "default", QueueLimits(max_concurrency=2))
    assert config == QueueConfig(max_concurrency=2)
    assert await conn.redis.hgetall(conn.keys.config) == {"max_concurrency": "2"}
    assert await queue_control.set_limits(conn, "default", QueueLimits()) == QueueConfig()
    assert await conn.redis.exists(conn.keys.config) == 0


async def test_pause_and_resume_are_stored_announced_and_repeatable(conn: Conn) -> None:
    await queue_control.set_limits(conn, "media", QueueLimits(max_concurrency=3))
    async with control_messages(conn) as messages:
        assert await queue_control.pause(conn, "media") == QueueConfig(
            paused=True, max_concurrency=3
        )
        # A repeat changes nothing but is announced again (for a consumer that missed one).
        assert (await queue_control.pause(conn, "media")).paused
        resumed = await queue_control.resume(conn, "media")
        events = [await next_message(messages) for _ in range(3)]
    assert events == [
        {"queue": "media", "event": "paused"},
        {"queue": "media", "event": "paused"},
        {"queue": "media", "event": "resumed"},
    ]
    assert resumed == QueueConfig(max_concurrency=3)
    assert await conn.redis.hgetall(conn.queue("media").config) == {"max_concurrency": "3"}


async def test_get_configs_reads_many_queues_at_once(conn: Conn) -> None:
    await queue_control.pause(conn, "mail")
    await queue_control.set_limits(
        conn, "sms", QueueLimits(rate_limit=RateLimit(tasks=10, per_seconds=1))
    )
    configs = await queue_control.get_configs(conn, ["mail", "sms", "default", "mail"])
    assert configs == {
        "mail": QueueConfig(paused=True),
        "sms": QueueConfig(rate_limit=RateLimit(tasks=10, per_seconds=1)),
        "default": QueueConfig(),
    }
    assert await queue_control.get_configs(conn, []) == {}


async def test_fields_broken_by_hand_read_as_absent(conn: Conn) -> None:
    await conn.redis.hset(
        conn.keys.config,
        mapping={
            "paused": "yes",
            "rate_tasks": "ten",
            "rate_seconds": "1",
            "max_concurrency": "-2",
        },
    )
    assert await queue_control.get_config(conn, "default") == QueueConfig()


@pytest.mark.parametrize(
    "body",
    [
        {"rate_limit": {"tasks": 0, "per_seconds": 1}},
        {"rate_limit": {"tasks": 1_000_001, "per_seconds": 1}},
        {"rate_limit": {"tasks": 10, "per_seconds": 0}},
        {"rate_limit": {"tasks": 10, "per_seconds": 86_401}},
        {"rate_limit": {"tasks": 10, "per_seconds": float("nan")}},
        {"rate_limit": {"tasks": 10}},
        {"rate_limit": {"tasks": 2.5, "per_seconds": 1}},
        {"rate_limit": {"tasks": "10", "per_seconds": 1}},
        {"rate_limit": {"tasks": 10, "per_seconds": 1, "burst": 5}},
        {"max_concurrency": 0},
        {"max_concurrency": 100_001},
        {"max_concurrency": True},
        {"concurrency": 5},
    ],
)
async def test_invalid_limits_are_refused_before_anything_is_written(
    conn: Conn, body: dict[str, Any]
) -> None:
    await queue_control.set_limits(conn, "default", QueueLimits(max_concurrency=5))
    with pytest.raises(ValidationError):
        await queue_control.set_limits(conn, "default", QueueLimits.model_validate(body))
    assert await queue_control.get_config(conn, "default") == QueueConfig(max_concurrency=5)


async def test_the_script_refuses_malformed_limits_too(conn: Conn) -> None:
    k = conn.keys
    keys = [k.config, *(k.idle(lane) for lane in LANES)]
    await queue_control.set_limits(conn, "default", QueueLimits(max_concurrency=5))
    for limits in (["10", "", ""], ["0", "1", ""], ["1.5", "1", ""], ["", "", "0"], ["", "", "x"]):
        with pytest.raises(ResponseError, match="invalid limits"):
            await conn.scripts["configure_queue"](keys, ["limits", *limits])
    assert await conn.redis.hgetall(k.config) == {"max_concurrency": "5"}


@pytest.mark.parametrize("name", ["", "Media", "a}b", "-x", "x" * 65])
async def test_invalid_queue_names_are_refused(conn: Conn, name: str) -> None:
    with pytest.raises(ValidationFailed):
        await queue_control.pause(conn, name)
    with pytest.raises(ValidationFailed):
        await queue_control.get_configs(conn, ["default", name])
    assert await conn.redis.dbsize() == 0
