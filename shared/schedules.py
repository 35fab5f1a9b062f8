"""Recurring schedules (SPEC section 12): their definitions, their ticks, and firing them.

A schedule is a HASH under the hash tag `{_schedules}` plus its name in a ZSET by next tick
(keys.SCHEDULES_*), written only by the schedule_*.lua scripts. Firing a tick is two steps
in two slots, made exactly-once by construction rather than by a lock:

1. create the tick's task in its queue's slot with enqueue.lua's `tick` mode: the queue keeps
   a fence per schedule ("<tick>:<task id>"), so the same tick sent again (a second
   scheduler, or a retry after a crash) answers with the task it already made;
2. advance the schedule with schedule_advance.lua, only if its next tick is still the one
   that fired (compare and set).

A crash between the two leaves the schedule on the fired tick: the next pass sends the tick
again, gets the same task back, and advances. Ticks missed while no scheduler ran fire once
(the first missed tick's identity), then the schedule goes on from now.

Time zones and DST: cron fields are matched against the wall clock of `timezone` (zoneinfo).
For an expression at fixed times (its minute and hour fields are not `*` or `*/n`), a wall
time that a spring-forward skips fires once at the first valid instant after the gap (02:30
on the night Berlin goes 02:00 -> 03:00 fires at 03:00), and a wall time that a fall-back
repeats fires once, at its first occurrence. An expression with `*` in its minute or hour
field runs on elapsed time through a change: nothing in the skipped hour, and each real
tick of the repeated hour (as Debian cron and cronsim do).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared import codec, keys, queues, registry, transitions
from shared.errors import RedisUnavailable, ScheduleNotFound, ValidationFailed
from shared.models import Task, TaskCreate
from shared.redis import Conn, guarded
from shared.settings import Settings

logger = logging.getLogger(__name__)

SCHEDULE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
MAX_INTERVAL_SECONDS = 366 * 86_400
# How long a queue keeps a schedule's fence (refreshed by every tick). It must outlast the
# time between a tick's create and its advance: a crash between the two followed by this
# long without any scheduler would let that one tick fire twice (README: Schedules).
FENCE_TTL_SECONDS = 8 * 86_400
DUE_BATCH = 1000  # schedules read and fired per pass (one script call, one pipeline)
TICK_GROUP_MS = 2  # ticks this close to the earliest read are created with it (<= 2 ms late)
TICK_BATCH = 250  # ticks of one queue per enqueue.lua call: the first exist before the last
# Create fields a recurring task cannot have: a fixed time, or dependencies on given tasks.
NOT_RECURRING = ("scheduled_for", "depends_on", "ref")


class ScheduleBody(BaseModel):
    """The body of `PUT /api/schedules/{name}`: exactly one of cron and interval_seconds."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        default=None,
        max_length=200,
        description="5 fields (minute hour day month weekday), or 6 with seconds first",
    )
    interval_seconds: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_SECONDS, strict=True)
    timezone: str = Field(default="UTC", max_length=64, description="IANA name, e.g. Europe/Berlin")
    task: TaskCreate = Field(description="A create body, as POST /api/tasks takes it")
    paused: bool = Field(default=False, strict=True)

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            value = " ".join(value.split())
            next_cron_tick(value, ZoneInfo("UTC"), codec.now_ms())  # ValueError when invalid
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> ScheduleBody:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and interval_seconds")
        return self


class Schedule(BaseModel):
    """A schedule as the API returns it; times are aware UTC datetimes."""

    name: str
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str = "UTC"
    task: dict[str, Any]
    paused: bool = False
    next_run_at: datetime | None = None  # None while paused
    last_run_at: datetime | None = None
    last_task_id: str | None = None
    created_at: datetime
    updated_at: datetime


# --- ticks ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The zoneinfo time zone `name`; ValueError when there is none such."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, KeyError, OSError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _fixed_time(expr: str) -> bool:
    """Whether a cron expression fires at fixed wall times: its minute and hour fields do
    not start with '*' (the Debian cron rule for DST, which cronsim follows)."""
    fields = expr.split()
    minute, hour = fields[-5], fields[-4]
    return not minute.startswith("*") and not hour.startswith("*")


def _ms(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000)


def _wall_to_ms(wall: datetime, tz: ZoneInfo) -> int:
    """The instant of a naive wall time in `tz`: its first occurrence when a fall-back repeats
    it, the first valid instant after the gap when a spring-forward skips it."""
    moment = wall.replace(tzinfo=tz, fold=0)
    while moment.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        wall += timedelta(minutes=1)  # a skipped wall time: on to the end of the gap
        wall = wall.replace(second=0)
        moment = wall.replace(tzinfo=tz, fold=0)
    return _ms(moment)


def next_cron_tick(expr: str, tz: ZoneInfo, after_ms: int) -> int:
    """The first tick of a cron expression strictly after `after_ms` (epoch ms), under the
    DST rule of this module's docstring. ValueError for an invalid expression."""
    if len(expr.split()) not in (5, 6):
        raise ValueError("a cron expression has 5 fields, or 6 with seconds first")
    after = datetime.fromtimestamp(after_ms / 1000, tz)
    try:
        if not _fixed_time(expr):
            return _ms(next(CronSim(expr, after)))
        # Fixed wall times: walk the naive wall clock (each wall time once), then place it.
        for wall in CronSim(expr, after.replace(tzinfo=None)):
            tick = _wall_to_ms(wall, tz)
            if tick > after_ms:
                return tick
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from exc
    except StopIteration:
        pass
    raise ValueError("this cron expression never fires")


def next_tick(definition: dict[str, Any], now_ms: int, fired_ms: int | None = None) -> int:
    """The schedule's next tick strictly after `now_ms`. An interval keeps to the grid of the
    tick that fired (`fired_ms`: no drift, missed ticks skipped); without one it starts one
    interval from now."""
    interval = definition.get("interval_seconds")
    if interval:
        step = int(interval) * 1000
        if fired_ms is None:
            return now_ms + step
        return fired_ms + (max(now_ms - fired_ms, 0) // step + 1) * step
    return next_cron_tick(definition["cron"], zone(definition.get("timezone") or "UTC"), now_ms)


# --- definitions ---------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not re.match(SCHEDULE_NAME_PATTERN, name):
        raise ValidationFailed(
            f"{name!r} is not a schedule name ({SCHEDULE_NAME_PATTERN})",
            [{"loc": ["path", "name"], "msg": "invalid schedule name"}],
        )
    return name


def template(create: TaskCreate, settings: Settings) -> dict[str, Any]:
    """The task a schedule creates on each tick, checked as POST /api/tasks checks a create
    (ValidationFailed: a 400); the spec enqueue.lua takes, without its id."""
    for name in NOT_RECURRING:
        if getattr(create, name) is not None:
            raise ValidationFailed(
                f"a schedule's task cannot have {name}: each tick creates it anew",
                [{"loc": ["body", "task", name], "msg": "not allowed in a schedule"}],
            )
    spec = dict(transitions.prepare(create, settings).spec)
    del spec["id"]
    return spec


def _definition(body: ScheduleBody) -> str:
    return codec.dumps(
        {
            "cron": body.cron,
            "interval_seconds": body.interval_seconds,
            "timezone": body.timezone,
            "task": body.task.model_dump(mode="json", exclude_none=True),
        }
    )


def _call(name: str) -> list[str]:
    return [keys.schedule(name), keys.SCHEDULES_DUE, keys.SCHEDULES_ALL]


async def put(
    conn: Conn,
    name: str,
    body: ScheduleBody,
    settings: Settings,
    *,
    now_ms: int | None = None,
    declare: bool = False,
) -> tuple[Schedule, bool]:
    """Create or replace a schedule; (the schedule, created). Everything is checked before
    anything is written. With `declare` (a @periodic at a scheduler's start) an unchanged
    definition is left as it is: its next tick, its pause."""
    _check_name(name)
    spec = template(body.task, settings)
    now = now_ms or codec.now_ms()
    definition = _definition(body)
    first = next_tick(codec.loads(definition), now)
    args = [name, definition, codec.dumps(spec), first, "1" if body.paused else "", now]
    args.append("declare" if declare else "put")
    code = await guarded(conn.scripts["schedule_put"](_call(name), args))
    return await get(conn, name), code == "created"


def _decode(fields: dict[str, str]) -> Schedule:
    definition = codec.loads(fields["def"])
    paused = fields.get("paused") == "1"
    return Schedule(
        name=fields["name"],
        cron=definition.get("cron"),
        interval_seconds=definition.get("interval_seconds"),
        timezone=definition.get("timezone") or "UTC",
        task=definition["task"],
        paused=paused,
        next_run_at=None if paused else codec.from_ms(fields["next"]),
        last_run_at=codec.from_ms(fields["last_run"]) if fields.get("last_run") else None,
        last_task_id=fields.get("last_task") or None,
        created_at=codec.from_ms(fields["created"]),
        updated_at=codec.from_ms(fields["updated"]),
    )


async def get(conn: Conn, name: str) -> Schedule:
    """One schedule; ScheduleNotFound (a 404) when there is none of that name."""
    fields = await guarded(conn.redis.hgetall(keys.schedule(name)))
    if not fields:
        raise ScheduleNotFound(name)
    return _decode(fields)


async def list_all(conn: Conn) -> list[Schedule]:
    """Every schedule, by name (one read of the name index, one pipelined read of them)."""
    names = await guarded(conn.redis.zrange(keys.SCHEDULES_ALL, 0, -1))
    if not names:
        return []
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.schedule(name))
        records = await guarded(pipe.execute())
    return [_decode(fields) for fields in records if fields]


async def _control(conn: Conn, name: str, action: str, extra: str | int = "") -> None:
    args = [action, name, codec.now_ms(), extra]
    if await guarded(conn.scripts["schedule_control"](_call(name), args)) == "missing":
        raise ScheduleNotFound(name)


async def pause(conn: Conn, name: str) -> Schedule:
    """Stop firing (the schedule is kept); ticks while paused never fire."""
    await _control(conn, name, "pause")
    return await get(conn, name)


async def resume(conn: Conn, name: str, *, now_ms: int | None = None) -> Schedule:
    """Fire again, from the first tick after now (ticks missed while paused do not fire)."""
    fields = await guarded(conn.redis.hgetall(keys.schedule(name)))
    if not fields:
        raise ScheduleNotFound(name)
    first = next_tick(codec.loads(fields["def"]), now_ms or codec.now_ms())
    await _control(conn, name, "resume", first)
    return await get(conn, name)


async def delete(conn: Conn, name: str) -> Schedule:
    """Remove a schedule; returns it as it was. Its queue's fence expires by itself."""
    schedule = await get(conn, name)
    await _control(conn, name, "delete")
    return schedule


async def trigger(conn: Conn, name: str) -> Task:
    """Fire now, outside the schedule's ticks: one new task (its next tick stays)."""
    fields = await guarded(conn.redis.hgetall(keys.schedule(name)))
    if not fields:
        raise ScheduleNotFound(name)
    spec = {**codec.loads(fields["spec"]), "id": transitions._new_id(), "schedule": name}
    new = transitions.NewTask(spec, codec.dumps(spec))
    [task], _ = await transitions.enqueue_prepared(conn, [new])
    await _control(conn, name, "triggered", task.id)
    return task


# --- firing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    """What one pass of `fire_due` did."""

    fired: int  # ticks whose task was created (or found: a replay) and whose schedule moved
    created: int  # tasks this pass created (a replayed tick's task is not counted)
    next_due_ms: int | None  # the earliest tick left (None: no active schedule)
    more: bool = False  # the batch was full: more may be due now


# Called between the creates and the advance of a pass (tests stop a scheduler there).
AfterCreate = Callable[[], Awaitable[None]]


async def fire_due(
    conn: Conn,
    *,
    now_ms: int | None = None,
    limit: int = DUE_BATCH,
    after_create: AfterCreate | None = None,
    lead_ms: int = 0,
    clock: Callable[[], int] = codec.now_ms,
) -> Fired:
    """Fire every schedule whose tick has come: one script call reads them, one pipeline
    creates their tasks (each in its queue's slot), one script call advances them.

    With `lead_ms`, ticks due within that lead are read (and their tasks prepared) ahead of
    time; the earliest of them (with any others within TICK_GROUP_MS after it) are created
    once `clock` reaches their tick, never before. The rest wait for the next pass."""
    now = now_ms or clock()
    due = [keys.SCHEDULES_DUE]
    head, *raw = await guarded(conn.scripts["schedule_due"](due, [now + lead_ms, limit]))
    records = [codec.pairs_to_dict(flat) for flat in raw]
    next_due = None if int(float(head)) < 0 else int(float(head))
    if not records:
        return Fired(0, 0, next_due)
    more = len(records) >= limit
    if lead_ms:
        first = int(records[0]["next"])
        later = [r for r in records if int(r["next"]) > first + TICK_GROUP_MS]
        if later:  # not this pass's: the next pass reads them again
            records, more = records[: len(records) - len(later)], False
            next_due = int(later[0]["next"])
    ticks = await _prepare_ticks(conn, records)
    if lead_ms:
        wait = max(int(r["next"]) for r in records) - clock()
        if wait > 0:
            await asyncio.sleep(wait / 1000)
        now = max(now, clock())
    replies, created = await _create_ticks(conn, records, ticks, now)
    if after_create is not None:
        await after_create()
    advance_keys, advance_args = [keys.SCHEDULES_DUE], list[str | int]([now])
    retry_soon = False
    for fields, task_id in zip(records, replies, strict=True):
        if task_id is None:
            retry_soon = True  # not created: its schedule stays due, tried again shortly
            continue
        tick = int(fields["next"])
        following = next_tick(codec.loads(fields["def"]), now, tick)
        advance_keys.append(keys.schedule(fields["name"]))
        advance_args += [fields["name"], tick, following, task_id]
        if next_due is None or following < next_due:
            next_due = following
    advanced = 0
    if len(advance_keys) > 1:
        codes = await guarded(conn.scripts["schedule_advance"](advance_keys, advance_args))
        advanced = sum(int(code) for code in codes)
    if retry_soon:
        next_due = min(next_due or now + 1000, now + 1000)
    return Fired(advanced, created, next_due, more=more)


@dataclass(frozen=True)
class _Ticks:
    """The enqueue.lua calls that create due ticks' tasks, built before their time."""

    calls: list[tuple[str, list[Any], list[Any]]]  # ARGV[1] (now) is set as they are sent
    members: list[list[int]]  # the records (by index) of each call, in ARGV order
    ids: list[str]  # the new task id of each record


async def _prepare_ticks(conn: Conn, records: list[dict[str, str]]) -> _Ticks:
    """One enqueue.lua call (`tick` mode) per queue and up to TICK_BATCH ticks."""
    batches: dict[tuple[str, int], list[int]] = {}
    specs = []
    for index, fields in enumerate(records):
        spec = {
            **codec.loads(fields["spec"]),
            "id": transitions._new_id(),
            "schedule": fields["name"],
            "tick": fields["next"],
        }
        specs.append(spec)
        # A task with a unique_key goes alone: a conflict refuses its whole call.
        batch = index if "unique_key" in spec else -1
        batches.setdefault((spec["queue"], batch), []).append(index)
    calls: list[tuple[str, list[Any], list[Any]]] = []
    members = []
    for (queue, _), indexes in batches.items():
        await queues.register(conn, queue)
        k = conn.queue(queue)
        for first in range(0, len(indexes), TICK_BATCH):
            chunk = indexes[first : first + TICK_BATCH]
            fences = [k.schedule_fence(records[i]["name"]) for i in chunk]
            args = [0, FENCE_TTL_SECONDS, "tick", *(codec.dumps(specs[i]) for i in chunk)]
            calls.append(("enqueue", [k.counts, k.index_all, k.delayed, *fences], args))
            members.append(chunk)
    return _Ticks(calls, members, [spec["id"] for spec in specs])


async def _create_ticks(
    conn: Conn, records: list[dict[str, str]], ticks: _Ticks, now: int
) -> tuple[list[str | None], int]:
    """Create the tasks of due ticks: the prepared calls, pipelined (on a cluster each goes
    to its queue's node). Each answer is the tick's task id; '' when it makes none (its
    unique_key is held, or a newer tick already fired); None when it could not be sent
    (tried again shortly). Also returns how many tasks were created now (a tick sent again
    is answered, not created)."""
    for _, _, args in ticks.calls:
        args[0] = now
    if conn.wait_replicas:
        replies = await _create_replicated(conn, ticks.calls)
    else:
        replies = await transitions.run_pipelined(conn, ticks.calls, what="schedule tick")
    answers: list[str | None] = [None] * len(records)
    for chunk, reply in zip(ticks.members, replies, strict=True):
        for position, index in enumerate(chunk):
            answers[index] = _tick_task(records[index], ticks.ids[index], reply, position)
    return answers, sum(a == new for a, new in zip(answers, ticks.ids, strict=True))


async def _create_replicated(
    conn: Conn, calls: Sequence[tuple[str, list[Any], list[Any]]]
) -> list[Any]:
    """With REDIS_WAIT_REPLICAS, each tick call is made the way a create is: the script and
    WAIT on one connection (ScriptRunner). A tick whose task the replicas do not confirm is not
    advanced: a failover now could lose the task while the schedule, in another slot, says
    the tick fired. It is sent again shortly, and its fence answers with the same task.
    Each reply is the call's result or its error; RedisUnavailable when none reached Redis."""
    replies = await asyncio.gather(
        *(guarded(conn.scripts[name](keys_, args)) for name, keys_, args in calls),
        return_exceptions=True,
    )
    if replies and all(isinstance(reply, RedisUnavailable) for reply in replies):
        raise cast(RedisUnavailable, replies[0])
    return list(replies)


def _tick_task(fields: dict[str, str], new_id: str, reply: Any, position: int) -> str | None:
    """One tick's answer out of its call's reply (see `_create_ticks`)."""
    name = fields["name"]
    if isinstance(reply, Exception):
        logger.warning("schedule %s: tick %s not created (%s)", name, fields["next"], reply)
        return None
    code = str(reply[0])
    if code == "ticks":
        answer = str(reply[1 + position])
        if answer == new_id:
            logger.info("schedule %s fired: task_id=%s", name, new_id)
            return new_id
        return answer[1:] if answer.startswith("=") else ""
    if code == "unique":
        logger.info("schedule %s: tick skipped, task %s holds its unique_key", name, reply[1])
    else:
        logger.warning("schedule %s: tick %s answered %s", name, fields["next"], reply)
    return ""


# --- @periodic declarations ----------------------------------------------------------------


async def declare_periodic(conn: Conn, settings: Settings) -> list[str]:
    """Upsert every `@periodic` schedule of the loaded modules; returns the names written
    (an unchanged definition keeps its next tick and its pause).

    A declaration the REST API would refuse (a bad cron, an unknown time zone, an invalid
    task) is logged as an error and skipped: one typo in a plugin must not stop the
    scheduler, whose other duties (promotion, recovery, retention) every queue needs."""
    written = []
    for declared in registry.periodic_schedules():
        try:
            body = ScheduleBody.model_validate(declared.body)
            _, created = await put(conn, declared.name, body, settings, declare=True)
        except (ValidationError, ValidationFailed) as exc:
            logger.error(
                "@periodic(%r) is not valid and was not declared: %s",
                declared.name,
                _first_problem(exc),
            )
            continue
        written.append(declared.name)
        logger.info("periodic schedule %s %s", declared.name, "created" if created else "kept")
    return written


def _first_problem(exc: ValidationError | ValidationFailed) -> str:
    """What is wrong, in one line: pydantic's first error, or the API's own message."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        return f"{where}: {error['msg']}" if where else str(error["msg"])
    return str(exc)
