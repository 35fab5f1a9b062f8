"""Every task state transition: one typed function per Lua script in `shared/scripts/`.

Services change a task's status only through these functions (SPEC section 6: atomic, counted,
published). Each maps the script's return code to a value or a `shared.errors` exception.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from shared import codec, queues, registry, workflows
from shared.errors import (
    DependencyNotFound,
    DependencyUnmet,
    InvalidTransition,
    RedisUnavailable,
    TaskNotFound,
    UniqueConflict,
    ValidationFailed,
)
from shared.keys import Keys
from shared.models import MAX_PAYLOAD_BYTES, Task, TaskCreate, TaskStatus
from shared.queries import get_task, get_tasks
from shared.redis import Conn, guarded, is_missing_script, is_unavailable
from shared.script_connection import ScriptArg, ScriptCall, ScriptConnection
from shared.settings import Settings
from shared.traceparent import valid_traceparent

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# Tasks one enqueue call creates at most: one atomic script holds Redis for its length
# (about 10 ms per 1,000 tasks), so larger batches are the caller's to split.
MAX_ENQUEUE_BATCH = 10_000
# Runs one script with (KEYS, ARGV): a registered script, or a ScriptConnection's runner.
ScriptRunner = ScriptCall
FREE_RECOVERIES = 3  # lost-consumer requeues that do not spend the retry budget
# Due tasks moved per promote_due call: small batches make the first due tasks visible to
# workers at once (a script is atomic) while the scheduler goes on with the rest.
PROMOTE_BATCH = 32


@dataclass(frozen=True)
class Claimed:
    """A task a consumer now holds: its attempt number, and the claim's fencing token, which
    its outcome must quote (an attempt number can repeat after a failover; a token cannot)."""

    task: Task
    attempt: int
    token: str
    owner: str
    poison: str | None = None  # the record did not decode: fail it with this error, do not run
    traceparent: str | None = None  # the create's trace (SPEC section 13), when it had one
    due: str | None = None  # when a retry was due (ms), for the `wait` span

    @property
    def key(self) -> tuple[str, str]:
        """What tells this claim from another claim of the same task (a second run handed
        back to the same consumer while the first still runs)."""
        return self.task.id, self.token


@dataclass(frozen=True)
class Outcome:
    """A finished run, reported by `report_outcomes` in one round trip with others."""

    task_id: str
    token: str  # the claim's fencing token (Claimed.token): a stale run's outcome is dropped
    ok: bool
    result: Any = None
    error: str = ""
    final: bool = False  # a failure that no retry can fix (a corrupt record): no retry
    cancelled: bool = False  # interrupted on request (SPEC section 10): ends cancelled
    result_json: str | None = None  # the result already encoded (the consumer checked it)
    queue: str | None = None  # the task's queue (None: the connection's default queue)


class NewTask(NamedTuple):
    """A create body checked against its type (`prepare`): the task enqueue.lua will store."""

    spec: dict[str, Any]  # the fields, as enqueue.lua stores them
    arg: str  # the same, as the script's JSON argument


def prepare(create: TaskCreate, settings: Settings, *, traceparent: str | None = None) -> NewTask:
    """Validate one create body against its type; ValidationFailed (a 400) when it is not.
    A valid W3C `traceparent` is kept with the task (a malformed one is ignored)."""
    return prepare_all([create], settings, batch=False, traceparent=traceparent)[0]


def prepare_all(
    creates: Sequence[TaskCreate],
    settings: Settings,
    *,
    batch: bool = True,
    traceparent: str | None = None,
) -> list[NewTask]:
    """`prepare` for the creates of one call, their `depends_on` and refs resolved into ids
    (`workflows.link`, SPEC section 11)."""
    specs = []
    for index, (create, task_id) in enumerate(zip(creates, _new_ids(len(creates)), strict=True)):
        try:
            specs.append(_spec(create, settings, task_id))
        except ValidationFailed as exc:
            if not batch:
                raise
            raise _in_item(exc, index) from None
    if traceparent and (traceparent := valid_traceparent(traceparent)):
        for spec in specs:  # absent, not null: a create without one stays as short
            spec["traceparent"] = traceparent
    if any(create.depends_on or create.ref for create in creates):
        workflows.link(creates, specs, batch=batch)
        for spec in specs:
            if "depends_on" in spec:  # one may end cancelled at once: its purge time
                spec["purge_ms"] = settings.result_ttl_seconds * 1000
    return [NewTask(spec, _encode_input(spec, "webhook")) for spec in specs]


def _in_item(exc: ValidationFailed, index: int) -> ValidationFailed:
    """`exc` for item `index` of a batch: its message and each detail's loc name the item, as
    the request's own validation does (["body", "tasks", index, field]), so a client can
    tell which of up to 1,000 items to fix."""
    details = [
        {**detail, "loc": ["body", "tasks", index, *detail["loc"][1:]]}
        if isinstance(detail, dict) and detail.get("loc", [None])[:1] == ["body"]
        else detail
        for detail in exc.details
    ] or [{"loc": ["body", "tasks", index], "msg": exc.message}]
    return ValidationFailed(f"tasks[{index}]: {exc.message}", details)


def _spec(create: TaskCreate, settings: Settings, task_id: str) -> dict[str, Any]:
    """The checked fields of one new task, as enqueue.lua stores them."""
    task_type = registry.validate_payload(create.type, create.payload, settings)
    payload = _encode_payload(create.payload)
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValidationFailed(
            f"payload is {len(payload.encode())} bytes serialised; "
            f"the limit is {MAX_PAYLOAD_BYTES}",
            [{"loc": ["body", "payload"], "msg": "payload too large"}],
        )
    if create.webhook is not None:
        from shared.netguard import check_webhook_url

        check_webhook_url(create.webhook, allow_private=settings.webhook_allow_private_networks)
    spec = {
        "id": task_id,
        # SPEC section 9: the create's queue, else its type's, else QUEUE_NAME.
        "queue": create.queue or task_type.queue or settings.queue_name,
        "type": create.type,
        "payload": payload,
        "priority": create.priority,
        "max_retries": create.max_retries,
        "run_at": codec.to_ms(create.scheduled_for) if create.scheduled_for else 0,
        "webhook": create.webhook,
        "timeout": create.timeout_seconds,
        "lane": task_type.lane,
    }
    if create.unique_key is not None:  # absent, not null: every create's ARGV stays short
        spec["unique_key"] = create.unique_key
    return spec


_VARIANT_DIGITS = "89ab"  # the RFC 4122 variant digit (10xx) for each of its two free bits


def _new_id() -> str:
    """A random UUID (version 4) as text, like `str(uuid.uuid4())`."""
    return _new_ids(1)[0]


def _new_ids(count: int) -> list[str]:
    """`count` random UUIDs (version 4) as text, from one read of the system's CSPRNG.

    A batch of 100 creates read os.urandom once per id, and building the text through an
    int or a UUID object cost as much again: together ~10 % of the gateway's CPU per batch.
    """
    raw = os.urandom(16 * count)
    ids = []
    for at in range(0, 16 * count, 16):
        h = raw[at : at + 16].hex()
        # Version 4 in the 13th digit; the RFC 4122 variant (10xx) in the 17th, whose two
        # low bits stay random: 122 random bits, as uuid.uuid4().
        variant = _VARIANT_DIGITS[raw[at + 8] >> 4 & 3]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return ids


def _created(
    spec: dict[str, Any], now: int, at: datetime, status: str = "", error: str = ""
) -> Task:
    """The task exactly as enqueue.lua stores it (what get_task would read back); `at` is
    `now` as a datetime; `status` and `error` as the script decided them for a task with
    dependencies."""
    run_at = int(spec["run_at"])
    return Task(
        id=spec["id"],
        queue=spec["queue"],
        type=spec["type"],
        payload=codec.loads(spec["payload"]),
        status=TaskStatus(status or ("scheduled" if run_at > now else "pending")),
        error=error or None,
        depends_on=spec.get("depends_on", []),
        priority=spec["priority"],
        max_retries=spec["max_retries"],
        retry_count=0,
        # enqueue.lua keeps no time at or before 1970 (Go's zero time is 0001-01-01): none.
        scheduled_for=codec.from_ms(run_at) if run_at > 0 else None,
        webhook=spec["webhook"] or None,
        timeout_seconds=spec["timeout"],
        unique_key=spec.get("unique_key"),
        schedule=spec.get("schedule"),
        created_at=at,
        updated_at=at,
    )


def _encode_input(value: Any, field: str) -> str:
    """JSON text of client input; what JSON cannot carry (an integer beyond 64 bits, nesting
    deeper than 254, a lone surrogate) is a 400 for that field, not a crash."""
    try:
        return codec.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise ValidationFailed(
            f"{field} cannot be stored as JSON: {exc}",
            [{"loc": ["body", field], "msg": str(exc)}],
        ) from exc


def _encode_payload(payload: Any) -> str:
    """`_encode_input` for the payload, the one field of any JSON shape: NaN and the
    infinities are a 400 too, not a changed value. orjson writes them as null, and the stdlib
    parser the API reads bodies with accepts NaN, Infinity and 1e400: stored, the task would
    run on other data. Only a text with a null in it can hide one, so most creates skip the
    walk. (The other fields are typed and bounded by TaskCreate, where NaN cannot pass.)"""
    text = _encode_input(payload, "payload")
    if "null" in text and _has_non_finite(payload):
        message = "NaN and Infinity are not JSON numbers"
        raise ValidationFailed(
            f"payload cannot be stored as JSON: {message}",
            [{"loc": ["body", "payload"], "msg": message}],
        )
    return text


def _has_non_finite(value: Any) -> bool:
    """Whether a float that is NaN or infinite is anywhere in `value` (dicts, lists, tuples),
    which codec.dumps has already walked: its depth is bounded."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(item) for item in value)
    return False


@functools.lru_cache(maxsize=64)
def _enqueue_layout(k: Keys) -> tuple[tuple[str, ...], tuple[ScriptArg, ...]]:
    """KEYS (with no Idempotency-Key) and the fixed ARGV[2] of enqueue.lua for one queue.

    Built once per queue: the key names are properties that format strings, and building
    them on every call cost more Python than the rest of a one-task enqueue.
    """
    keys = (k.counts, k.index_all, k.delayed, k.idempotency("-"))
    fixed: tuple[ScriptArg, ...] = (IDEMPOTENCY_TTL_SECONDS,)
    return keys, fixed


async def enqueue(
    conn: Conn,
    creates: Sequence[TaskCreate],
    settings: Settings,
    *,
    idempotency_key: str | None = None,
    now_ms: int | None = None,
    traceparent: str | None = None,
    batch: bool = True,
) -> tuple[list[Task], bool]:
    """Create tasks atomically (all or nothing) in one round trip. Returns (tasks, replayed).

    `batch=False`: one create of a single-create route (POST /api/tasks, `enqueue`), read as
    `prepare` reads it: its errors name no batch item, and it has no batch to refer to."""
    tasks = prepare_all(creates, settings, batch=batch, traceparent=traceparent)
    return await enqueue_prepared(conn, tasks, idempotency_key=idempotency_key, now_ms=now_ms)


async def enqueue_prepared(
    conn: Conn,
    tasks: Sequence[NewTask],
    *,
    idempotency_key: str | None = None,
    now_ms: int | None = None,
    run: ScriptRunner | None = None,
) -> tuple[list[Task], bool]:
    """`enqueue` for tasks already `prepare`d.

    `run` runs enqueue.lua with (keys, args); by default it runs on `conn`. The producer
    passes its own connection for single tasks (see `shared.producer`).
    """
    if len(tasks) > MAX_ENQUEUE_BATCH:  # checked before the script: nothing half-written
        raise ValidationFailed(
            f"{len(tasks)} tasks in one call; at most {MAX_ENQUEUE_BATCH} tasks are created "
            "atomically: split the batch",
            [{"loc": ["body", "tasks"], "msg": f"at most {MAX_ENQUEUE_BATCH} items"}],
        )
    queue = _one_queue(tasks)
    _unique_keys_once(tasks)
    k = conn.queue(queue)
    if not queues.registered_here(conn, queue):
        await _dependencies_exist(conn, k, tasks, queue)
    await queues.register(conn, queue)
    now = now_ms or codec.now_ms()
    keys, fixed = _enqueue_layout(k)
    if idempotency_key:
        keys = (*keys[:3], k.idempotency(idempotency_key))
    args = [now, *fixed, "1" if idempotency_key else "", *(task.arg for task in tasks)]
    code, extra, *decided = await guarded((run or conn.scripts["enqueue"])(keys, args))
    if code == "replayed":
        from shared.errors import ReplayPurged

        ids = extra.split(",")
        replayed = await get_tasks(conn, ids, queue=queue)  # skips ids without a record
        if len(replayed) < len(ids):  # RESULT_TTL_SECONDS (under the key's 24 h) purged some
            found = {task.id for task in replayed}
            raise ReplayPurged([task_id for task_id in ids if task_id not in found])
        return replayed, True
    if code == "unique":
        raise UniqueConflict(extra)
    if code == "nodep":
        raise DependencyNotFound(extra, queue)
    if code == "duplicate":
        # Ids are fresh uuid4s, so an existing one means this very call already ran (the
        # client retried after a dropped connection): the write is done, answer with it.
        return await get_tasks(conn, [task.spec["id"] for task in tasks], queue=queue), False
    # The script wrote exactly these values: no second round trip to read them back.
    at = codec.from_ms(now)
    if decided:  # status and error of each task with dependencies, in order
        outcome = iter(decided)
        return [
            _created(task.spec, now, at, next(outcome), next(outcome))
            if "depends_on" in task.spec
            else _created(task.spec, now, at)
            for task in tasks
        ], False
    return [_created(task.spec, now, at) for task in tasks], False


async def _dependencies_exist(conn: Conn, k: Keys, tasks: Sequence[NewTask], queue: str) -> None:
    """DependencyNotFound, before the queue is registered, when a dependency outside the
    batch is not a task of this queue: a refused create must not leave a queue name behind
    (GET /api/queues, workers of `*`). Asked only while this process has not registered the
    queue; enqueue.lua checks again, atomically, and a dependency that exists means the
    queue has tasks already, so registering it is right."""
    batch = {task.spec["id"] for task in tasks}
    outside = list(
        dict.fromkeys(
            dep for task in tasks for dep in task.spec.get("depends_on") or () if dep not in batch
        )
    )
    if not outside:
        return
    async with conn.redis.pipeline(transaction=False) as pipe:
        for dep in outside:
            pipe.exists(k.task(dep))
        found = await guarded(pipe.execute())
    for dep, exists in zip(outside, found, strict=True):
        if not exists:
            raise DependencyNotFound(dep, queue)


def _unique_keys_once(tasks: Sequence[NewTask]) -> None:
    """A batch is created whole or not at all, so two of its tasks cannot share a unique_key
    (one of them would have to be refused): a 400 before anything is written."""
    seen: set[str] = set()
    for index, task in enumerate(tasks):
        key = task.spec.get("unique_key")
        if key is None:
            continue
        if key in seen:
            raise ValidationFailed(
                f"unique_key {key!r} appears more than once in this batch",
                [{"loc": ["body", "tasks", index, "unique_key"], "msg": "repeated"}],
            )
        seen.add(key)


def _one_queue(tasks: Sequence[NewTask]) -> str:
    """The queue of a batch: one script writes it atomically, so it lives in one queue (one
    Redis Cluster slot); tasks of several queues are several calls."""
    names = sorted({task.spec["queue"] for task in tasks})
    if len(names) > 1:
        raise ValidationFailed(
            f"a batch is created atomically in one queue; this one names {', '.join(names)}: "
            "send one batch per queue",
            [{"loc": ["body", "tasks"], "msg": "several queues", "queues": names}],
        )
    return names[0] if names else "default"


@dataclass(frozen=True)
class ClaimReply:
    """What one claim call did: the tasks now held, and the consumer's offers re-synced."""

    claimed: list[Claimed]
    withdrawn: int  # offers of this consumer still unused, taken back and claimed with
    offered: int  # slots now offered for hand-over (their tasks arrive in the inbox)
    waiting: int  # tasks already handed over, in the inbox, not yet read
    paused: bool = False  # the queue is paused: nothing claimed, nothing offered
    # The queue's rate limit had no token (or its concurrency limit no room) for all that
    # was wanted: claim it again at this server time (ms); None when not limited.
    retry_at_ms: int | None = None
    # With `completed` (claim_or_offer): each completion's code, as report_outcomes gives it.
    codes: list[str] = field(default_factory=list)


async def claim(
    conn: Conn,
    lane: str,
    count: int,
    *,
    worker: str,
    owner: str,
    lease_seconds: float,
    queue: str | None = None,
) -> list[Claimed]:
    """Take up to `count` pending tasks of a lane of one queue (default: QUEUE_NAME),
    priority 5 first, FIFO within a priority."""
    reply = await claim_or_offer(
        conn,
        lane,
        count,
        worker=worker,
        owner=owner,
        lease_seconds=lease_seconds,
        offer=False,
        queue=queue,
    )
    return reply.claimed


async def claim_or_offer(
    conn: Conn,
    lane: str,
    count: int,
    *,
    worker: str,
    owner: str,
    lease_seconds: float,
    offer: bool = True,
    queue: str | None = None,
    offers_held: int | None = None,
    types: Iterable[str] | str | None = None,
    completed: Sequence[Outcome] = (),
    settings: Settings | None = None,
    via: ScriptConnection | None = None,
) -> ClaimReply:
    """`claim`, for a consumer that also takes hand-overs: the owner's offers still unused
    are withdrawn and claimed with `count`, and with `offer` the slots left unfilled are
    offered, so enqueues hand tasks straight to its inbox (`handed_over` decodes them).

    With `offers_held` (the offers the caller believes it has in this queue), `count` is
    every slot not running nor waiting in an inbox, offers included: the script takes off
    the offers used since (their tasks are on the way). A consumer of several queues offers
    the same slots in each, so only this form counts them once.

    `types` are the task types the caller runs (None: every type; or comma-separated text):
    it never takes another (claim.lua parks such a task where only consumers that run its
    type look).

    `completed`: successful runs of this queue to complete first, in the same script call
    (complete_claim.lua), so a consumer reports and takes its next task in one round trip;
    their codes come back in `codes`. Needs `settings` (the result TTL).

    `via`: the caller's own ScriptConnection (a consumer claims one call at a time)."""
    k = conn.queue(queue)
    keys = [
        k.counts,
        k.leases,
        k.held(owner),
        k.idle(lane),
        k.offers(lane),
        k.inbox(owner),
        *k.ready_all(lane),
        k.ready_skips,
        k.config,
        k.parked_lists,
    ]
    args: list[ScriptArg] = [
        int(lease_seconds * 1000),
        count,
        worker,
        owner,
        "1" if offer else "",
        "" if offers_held is None else offers_held,
        lane,
        "*" if types is None else types if isinstance(types, str) else ",".join(sorted(types)),
    ]
    codes: list[str] = []
    if completed:
        assert settings is not None, "completions need the settings (RESULT_TTL)"
        done_keys, done_args = _complete_call(k, completed, settings, codec.now_ms())
        keys += done_keys[2:]  # counts and leases are claim.lua's first two keys already
        script = via.runner("complete_claim") if via else conn.scripts["complete_claim"]
        raw_codes, reply = await guarded(script(keys, [*args, *done_args]))
        codes = [str(code) for code in raw_codes]
    else:
        reply = await guarded((via.runner("claim") if via else conn.scripts["claim"])(keys, args))
    withdrawn, offered, waiting, blocked, *records = reply
    claimed = [_claimed(codec.pairs_to_dict(flat), owner, k.queue) for flat in records]
    paused, retry_at = blocked == "paused", None
    if blocked and not paused:
        retry_at = int(blocked)
    return ClaimReply(claimed, int(withdrawn), int(offered), int(waiting), paused, retry_at, codes)


def handed_over(message: str, owner: str, queue: str | None = None) -> Claimed | None:
    """A task a script handed to `owner`'s inbox of `queue` (hand_over in _lib.lua); None for
    the empty message `withdraw_offers` leaves as the inbox's last."""
    if not message:
        return None
    return _claimed(codec.pairs_to_dict(codec.loads(message)), owner, queue)


def _claimed(fields: dict[str, str], owner: str, queue: str | None = None) -> Claimed:
    """One claimed record; one that does not decode comes back as poison, not as an error
    that would lose the rest of the batch."""
    if queue is not None:
        fields.setdefault(codec.F_QUEUE, queue)  # written before named queues: in its key
    attempt = int(fields[codec.F_ATTEMPT])  # claim.lua just set it with HINCRBY
    token = fields.get(codec.F_TOKEN, "")
    # The record's HGETALL holds these only when set: no read of their own.
    trace, due = fields.get(codec.F_TRACEPARENT), fields.get(codec.F_DUE)
    try:
        return Claimed(codec.decode_task_strict(fields), attempt, token, owner, None, trace, due)
    except codec.CorruptRecord as exc:
        task = codec.salvage_task(fields, str(exc))
        return Claimed(task, attempt, token, owner, poison=str(exc))


async def extend_leases(
    conn: Conn, task_ids: Sequence[str], lease_seconds: float, *, queue: str | None = None
) -> None:
    """Push the lease deadline of held tasks of a queue forward (only ids still leased are
    touched), by the server's clock, which recovery judges them by."""
    if task_ids:
        until = await conn.server_ms() + int(lease_seconds * 1000)
        mapping = dict.fromkeys(task_ids, until)
        await guarded(conn.redis.zadd(conn.queue(queue).leases, mapping, xx=True))


def _purge_at(settings: Settings, now: int) -> int:
    return now + settings.result_ttl_seconds * 1000


def _complete_call(
    k: Keys, outcomes: Sequence[Outcome], settings: Settings, now: int
) -> tuple[list[Any], list[Any]]:
    """One complete.lua call for a batch of successful outcomes of queue `k`."""
    keys: list[Any] = [k.counts, k.leases, k.expiry, k.outbox, k.throughput(now // 60_000)]
    args: list[ScriptArg] = [now, _purge_at(settings, now)]
    for outcome in outcomes:
        result = outcome.result_json
        args += [
            outcome.task_id,
            outcome.token,
            codec.dumps(outcome.result) if result is None else result,
        ]
    return keys, args


def _fail_call(
    k: Keys,
    task_id: str,
    token: str | None,
    error: str,
    settings: Settings,
    now: int,
    mode: str,
) -> tuple[list[Any], list[Any]]:
    keys = [
        k.task(task_id),
        k.task_events(task_id),
        k.counts,
        k.leases,
        k.delayed,
        k.expiry,
        k.outbox,
        k.throughput(now // 60_000),
    ]
    args: list[ScriptArg] = [
        task_id,
        token or "",
        now,
        codec.safe_text(error[:2000]),
        mode,
        int(settings.retry_backoff_seconds * 1000),
        int(settings.retry_backoff_max_seconds * 1000),
        random.random(),
        _purge_at(settings, now),
        f"msg_{uuid.uuid4().hex}",
        FREE_RECOVERIES,
    ]
    return keys, args


REPORT_ATTEMPTS = 5  # sends of the calls of one report that found Redis unavailable


async def _pipelined(conn: Conn, calls: Sequence[tuple[str, list[Any], list[Any]]]) -> list[Any]:
    """Script calls in one pipeline; each reply is its result or its error. Everything in
    here, the pipeline's own clean-up included, is under `guarded` in the caller."""
    async with conn.redis.pipeline(transaction=False) as pipe:
        for name, keys, args in calls:
            pipe.execute_command(*conn.scripts[name].command(keys, args))
        return list(await pipe.execute(raise_on_error=False))


async def run_pipelined(
    conn: Conn, calls: Sequence[tuple[str, list[Any], list[Any]]], *, what: str = "script"
) -> list[Any]:
    """Run (script name, KEYS, ARGV) calls in one pipelined round trip; each reply is its
    result or its error (a script error concerns its own call only). On a cluster, redis-py
    sends each call to the node of its first key (the queue's slot).

    A call that did not run is sent again, up to REPORT_ATTEMPTS times: Redis lost the
    scripts, or its node could not be reached. RedisUnavailable when one never ran."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(REPORT_ATTEMPTS):
        for i, reply in zip(
            todo, await guarded(_pipelined(conn, [calls[i] for i in todo])), strict=True
        ):
            replies[i] = reply
        # Send again only the calls that did not run: Redis lost the scripts (a restart, a
        # failover to a node without them), or their node could not be reached (on a
        # cluster, one shard failing over); the others did run, and must not run twice.
        missing = [i for i in todo if is_missing_script(replies[i])]
        todo = [i for i in todo if is_missing_script(replies[i]) or is_unavailable(replies[i])]
        if not todo:
            break
        if missing:
            await conn.load_scripts()
        if attempt < REPORT_ATTEMPTS - 1:
            await asyncio.sleep(0.05 * 2**attempt)
    else:
        raise RedisUnavailable(f"{len(todo)} {what} calls could not be sent: {replies[todo[0]]}")
    return replies


async def report_outcomes(conn: Conn, outcomes: Sequence[Outcome], settings: Settings) -> list[str]:
    """Complete or fail several runs in one pipelined round trip; returns each one's code.

    Successes go in one complete.lua call per queue; each failure is a fail.lua call.
    """
    now = codec.now_ms()
    successes: dict[str | None, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.ok:
            successes.setdefault(outcome.queue, []).append(outcome)
    calls = [
        ("complete", *_complete_call(conn.queue(queue), batch, settings, now))
        for queue, batch in successes.items()
    ]
    for outcome in outcomes:
        if not outcome.ok:
            calls.append(
                (
                    "fail",
                    *_fail_call(
                        conn.queue(outcome.queue),
                        outcome.task_id,
                        outcome.token,
                        outcome.error,
                        settings,
                        now,
                        _fail_mode(outcome),
                    ),
                )
            )
    replies = await run_pipelined(conn, calls, what="outcome")
    # A script error concerns its own call only (the lease backstop recovers those tasks).
    done: dict[str | None, Iterator[str]] = {}
    for (queue, batch), reply in zip(successes.items(), replies, strict=False):
        done[queue] = iter(
            [f"error: {reply}"] * len(batch)
            if isinstance(reply, Exception)
            else [str(code) for code in reply]
        )
    failed = iter(replies[len(successes) :])
    codes = []
    for outcome in outcomes:
        if outcome.ok:
            codes.append(next(done[outcome.queue]))
        else:
            r = next(failed)
            codes.append(f"error: {r}" if isinstance(r, Exception) else str(r[0]))
    return codes


def _fail_mode(outcome: Outcome) -> str:
    if outcome.cancelled:
        return "cancelled"
    return "final" if outcome.final else "worker"


async def complete(
    conn: Conn,
    task_id: str,
    token: str,
    result: Any,
    settings: Settings,
    *,
    queue: str | None = None,
) -> str:
    """processing -> completed for the claim `token`. Returns 'ok', 'stale' or 'missing'."""
    keys, args = _complete_call(
        conn.queue(queue), [Outcome(task_id, token, True, result)], settings, codec.now_ms()
    )
    return str((await guarded(conn.scripts["complete"](keys, args)))[0])


async def fail(
    conn: Conn,
    task_id: str,
    token: str | None,
    error: str,
    settings: Settings,
    *,
    mode: str = "worker",
    queue: str | None = None,
) -> list[str]:
    """processing -> retrying | failed (or pending for a lost consumer) for the claim `token`
    (None: whichever claim holds it, as recovery does). Returns the reply."""
    k = conn.queue(queue)
    keys, args = _fail_call(k, task_id, token, error, settings, codec.now_ms(), mode)
    return [str(part) for part in await guarded(conn.scripts["fail"](keys, args))]


async def requeue(
    conn: Conn, task_id: str, token: str, reason: str, *, queue: str | None = None
) -> str:
    """processing -> pending, at the front of its queue (graceful shutdown hand-back)."""
    k, now = conn.queue(queue), codec.now_ms()
    keys = [k.task(task_id), k.task_events(task_id), k.counts, k.leases]
    args: list[ScriptArg] = [task_id, token, now, codec.safe_text(reason)]
    return str((await guarded(conn.scripts["requeue"](keys, args)))[0])


async def promote_due(
    conn: Conn,
    limit: int = PROMOTE_BATCH,
    lead_seconds: float = 0.0,
    *,
    queue: str | None = None,
) -> tuple[int, int | None]:
    """scheduled | retrying -> pending for ids of a queue due within `lead_seconds` from now.
    Returns (moved, next due ms or None)."""
    k, now = conn.queue(queue), codec.now_ms()
    args: list[ScriptArg] = [now, limit, now + int(lead_seconds * 1000)]
    moved, next_due = await guarded(conn.scripts["promote_due"]([k.delayed, k.counts], args))
    due = int(float(next_due))
    return int(moved), (None if due < 0 else due)


async def cancel(conn: Conn, task_id: str, settings: Settings, *, queue: str | None = None) -> Task:
    """pending | scheduled | retrying -> cancelled. Raises TaskNotFound or InvalidTransition.
    Without `queue`, the task's queue is looked up.

    A processing task is not moved: its cancel is requested (SPEC section 10) and the task
    comes back still processing, with `cancel_requested` set; its worker interrupts the
    handler and ends it (fail with mode "cancelled"), unless the handler finishes first."""
    k = conn.queue(queue) if queue else await queues.locate(conn, task_id)
    reply = await guarded(conn.scripts["cancel"](*cancel_call(k, task_id, settings)))
    _raise_for(reply, task_id, "cancel")
    return await get_task(conn, task_id, queue=k.queue)


async def progress(
    conn: Conn,
    task_id: str,
    token: str,
    percent: float,
    message: str | None = None,
    *,
    queue: str | None = None,
) -> str:
    """Store a running handler's progress and publish `task.progress` (SPEC section 10), for
    the claim `token` only. Returns 'ok', 'stale' (the claim is no longer current) or
    'missing'. The caller validates (registry.check_progress) and coalesces the calls."""
    k = conn.queue(queue)
    text = codec.safe_text(message or "")
    args: list[ScriptArg] = [task_id, token, f"{percent:g}", text, codec.now_ms()]
    return str((await guarded(conn.scripts["progress"]([k.task(task_id)], args)))[0])


def cancel_call(k: Keys, task_id: str, settings: Settings) -> tuple[list[str], list[ScriptArg]]:
    """KEYS and ARGV of cancel.lua for one task of queue `k` (the single and bulk cancel)."""
    now = codec.now_ms()
    keys = [k.task(task_id), k.task_events(task_id), k.counts, k.delayed, k.expiry, k.ready_skips]
    return keys, [task_id, now, _purge_at(settings, now)]


async def retry_failed(conn: Conn, task_id: str, *, queue: str | None = None) -> Task:
    """failed | cancelled -> pending with a fresh retry budget (manual retry). Without
    `queue`, the task's queue is looked up."""
    k = conn.queue(queue) if queue else await queues.locate(conn, task_id)
    reply = await guarded(conn.scripts["retry_failed"](*retry_failed_call(k, task_id)))
    _raise_for(reply, task_id, "retry")
    return await get_task(conn, task_id, queue=k.queue)


def retry_failed_call(k: Keys, task_id: str) -> tuple[list[str], list[ScriptArg]]:
    """KEYS and ARGV of retry_failed.lua for one task of queue `k` (single and bulk retry)."""
    keys = [k.task(task_id), k.task_events(task_id), k.counts, k.expiry]
    return keys, [task_id, codec.now_ms()]


def purge_call(k: Keys, task_id: str) -> tuple[list[str], list[ScriptArg]]:
    """KEYS and ARGV of purge.lua: delete one final task of queue `k` now, as retention
    would (a bulk purge)."""
    keys = [
        k.task(task_id),
        k.task_events(task_id),
        k.task_deliveries(task_id),
        k.counts,
        k.index_all,
        k.expiry,
    ]
    return keys, [task_id]


async def drain_cascade(conn: Conn, settings: Settings, *, queue: str | None = None) -> int:
    """Cancel the waiting dependents that a bounded cascade of a queue left to do (SPEC
    section 11; cascade.lua); returns how many ids are still to do (0: none)."""
    k, now = conn.queue(queue), codec.now_ms()
    args: list[ScriptArg] = [now, _purge_at(settings, now)]
    return int(await guarded(conn.scripts["cascade"]([k.cascade], args)))


async def purge_expired(conn: Conn, limit: int = 1000, *, queue: str | None = None) -> int:
    """Delete final tasks of a queue whose RESULT_TTL_SECONDS has passed; returns how many."""
    k = conn.queue(queue)
    args: list[ScriptArg] = [codec.now_ms(), limit]
    return int(
        await guarded(conn.scripts["purge_expired"]([k.expiry, k.counts, k.index_all], args))
    )


def _raise_for(reply: list[str], task_id: str, action: str) -> None:
    if reply[0] == "missing":
        raise TaskNotFound(task_id)
    if reply[0] == "invalid":
        raise InvalidTransition(task_id, reply[1], action)
    if reply[0] == "unique":
        raise UniqueConflict(reply[1])
    if reply[0] == "dependency":
        raise DependencyUnmet(task_id, reply[1], reply[2])
