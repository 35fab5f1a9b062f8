"""Pause, resume and limits of a queue (SPEC section 9): written by configure_queue.lua, which
tells every consumer on QUEUE_CONTROL_CHANNEL; enforced by claim.lua and hand_over (_lib.lua)
for all workers at once, where tasks start."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ValidationFailed
from shared.keys import LANES, Keys
from shared.models import QUEUE_NAME_PATTERN
from shared.redis import Conn, guarded

# The config HASH fields a QueueConfig is read from (rate_tat is the limiter's own state).
_FIELDS = ("paused", "rate_tasks", "rate_seconds", "max_concurrency")


class RateLimit(BaseModel):
    """At most `tasks` starts per `per_seconds`: a burst of up to `tasks`, then one start
    every per_seconds / tasks."""

    model_config = ConfigDict(extra="forbid")

    tasks: int = Field(ge=1, le=1_000_000, strict=True)
    per_seconds: float = Field(gt=0, le=86_400, strict=True, allow_inf_nan=False)


class QueueLimits(BaseModel):
    """The body of `PUT /api/queues/{name}/limits`: it replaces both limits, and a null (or
    absent) one is removed."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: RateLimit | None = None
    max_concurrency: int | None = Field(default=None, ge=1, le=100_000, strict=True)


class QueueConfig(BaseModel):
    """A queue's controls as stored."""

    paused: bool = False
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None


def _keys(conn: Conn, queue: str) -> Keys:
    """The keys of `queue`, a valid queue name (ValidationFailed, a 400, for anything else:
    the name becomes the hash tag of every key of the queue)."""
    if queue != conn.keys.queue and not re.fullmatch(QUEUE_NAME_PATTERN, queue):
        raise ValidationFailed(
            f"invalid queue name {queue[:80]!r}",
            [{"loc": ["path", "name"], "msg": f"must match {QUEUE_NAME_PATTERN}"}],
        )
    return conn.queue(queue)


def _config(values: Sequence[Any]) -> QueueConfig:
    """A QueueConfig from the _FIELDS values; a field that does not parse (edited by hand)
    counts as absent, as the scripts treat it."""
    paused, tasks, seconds, max_concurrency = values
    rate = None
    if tasks is not None and seconds is not None:
        try:
            rate = RateLimit(tasks=int(tasks), per_seconds=float(seconds))
        except ValueError:  # pydantic's ValidationError is one too
            rate = None
    cap = None
    if max_concurrency is not None and max_concurrency.isdigit() and int(max_concurrency) > 0:
        cap = int(max_concurrency)
    return QueueConfig(paused=paused == "1", rate_limit=rate, max_concurrency=cap)


async def _configure(conn: Conn, queue: str, op: str, *limits: str) -> QueueConfig:
    """Run configure_queue.lua: one atomic write plus its message; returns what is stored."""
    k = _keys(conn, queue)
    keys = [k.config, *(k.idle(lane) for lane in LANES)]
    args = [op, *(limits or ("", "", ""))]
    return _config(await guarded(conn.scripts["configure_queue"](keys, args)))


async def pause(conn: Conn, queue: str) -> QueueConfig:
    """Pause a queue: it keeps accepting and promoting tasks but starts none (running tasks
    finish); its hand-over offers are withdrawn and consumers hear "paused"."""
    return await _configure(conn, queue, "pause")


async def resume(conn: Conn, queue: str) -> QueueConfig:
    """Resume a paused queue; consumers hear "resumed" and claim it again."""
    return await _configure(conn, queue, "resume")


async def set_limits(conn: Conn, queue: str, limits: QueueLimits) -> QueueConfig:
    """Replace a queue's rate limit and max concurrency (None removes one); consumers hear
    "limits" and claim it again."""
    rate, cap = limits.rate_limit, limits.max_concurrency
    return await _configure(
        conn,
        queue,
        "limits",
        str(rate.tasks) if rate else "",
        repr(rate.per_seconds) if rate else "",
        str(cap) if cap is not None else "",
    )


async def get_config(conn: Conn, queue: str) -> QueueConfig:
    """A queue's controls (all absent for a queue never configured)."""
    return _config(await guarded(conn.redis.hmget(_keys(conn, queue).config, _FIELDS)))


async def get_configs(conn: Conn, queues: Sequence[str]) -> dict[str, QueueConfig]:
    """The controls of several queues in one pipelined round trip."""
    names = list(dict.fromkeys(queues))
    if not names:
        return {}
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(_keys(conn, name).config, _FIELDS)
        replies = await guarded(pipe.execute())
    return {name: _config(values) for name, values in zip(names, replies, strict=True)}
