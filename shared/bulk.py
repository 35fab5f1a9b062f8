"""Bulk actions (SPEC section 10): retry, cancel or purge up to MAX_BULK tasks in one call.

Tasks are chosen by id or by a filter (status, queue, type). Each one is moved by the same
transition script as the single action (retry_failed.lua, cancel.lua; purge.lua deletes as
retention does), so counts stay exact; the per-task calls go in pipelined round trips of
CHUNK, each to the node that owns its queue's slot. A task the action does not apply to is
skipped, counted by reason.

A filter walks its index (the status's, else every task's) newest first and stops after
`limit` tasks; the cursor it answers with is the position (queue, created ms, id) of the last
one taken, so the next call starts right after it: acted-on tasks leaving the index shift
nothing, and tasks created meanwhile (newer than the first call's start) are not taken.

A bad request is refused (ValidationFailed) before anything is written. Redis failing half-way
(RedisUnavailable, after the retries of `transitions.run_pipelined`) may leave the first
chunks done: sending the same request again is safe, as what was done is skipped.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from shared import queries, queues, transitions
from shared.errors import ValidationFailed
from shared.keys import Keys
from shared.models import QUEUE_NAME_PATTERN, TASK_ID, TaskStatus
from shared.redis import Conn, guarded
from shared.settings import Settings

logger = logging.getLogger(__name__)

BulkAction = Literal["retry", "cancel", "purge"]
SCRIPT_BY_ACTION: dict[str, str] = {"retry": "retry_failed", "cancel": "cancel", "purge": "purge"}
MAX_BULK = 10_000  # tasks one call acts on at most (ids given, or taken by a filter)
CHUNK = 250  # per-task script calls per pipelined round trip
WALK_CHUNK = 1000  # index entries read per round trip while a filter selects
MAX_WALK = 100_000  # index entries one call walks past at most (a type filter's misses)

# Why a task was skipped (the keys of BulkResult.skipped, always all present).
NOT_FOUND = "not_found"  # no task has this id (never created, or purged)
INVALID_STATUS = "invalid_status"  # its status does not allow the action (e.g. purge: not final)
UNIQUE_CONFLICT = "unique_conflict"  # retry: another live task holds its unique_key now
# retry: one of its dependencies (SPEC section 11) failed, was cancelled or purged.
DEPENDENCY_UNMET = "dependency_unmet"
AWAITED = "awaited_by_dependent"  # purge: a waiting task still needs its result
DUPLICATE = "duplicate"  # the id appears more than once in `ids`: acted on once
ERROR = "error"  # its record is broken (the script failed on it); the others went on
SKIP_REASONS = (
    NOT_FOUND,
    INVALID_STATUS,
    UNIQUE_CONFLICT,
    DEPENDENCY_UNMET,
    AWAITED,
    DUPLICATE,
    ERROR,
)
# Replies that mean the action was taken (cancel.lua may answer a running task's cancel
# as requested: the worker interrupts it).
ACTED_CODES = frozenset({"ok", "requested"})
REASON_BY_CODE = {
    "missing": NOT_FOUND,
    "invalid": INVALID_STATUS,
    "unique": UNIQUE_CONFLICT,
    "dependency": DEPENDENCY_UNMET,
    "awaited": AWAITED,
}


class BulkFilter(BaseModel):
    """Which tasks a filtered bulk action takes: all given fields must match."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = None
    queue: str | None = Field(default=None, pattern=QUEUE_NAME_PATTERN, max_length=64)
    type: str | None = Field(default=None, min_length=1, max_length=100)


def _zero() -> dict[str, int]:
    return dict.fromkeys(SKIP_REASONS, 0)


@dataclass
class BulkResult:
    """What one bulk call did: tasks acted on, tasks skipped by reason, and where a filtered
    call goes on (None: nothing more matches)."""

    action: str
    acted: int = 0
    skipped: dict[str, int] = field(default_factory=_zero)
    cursor: str | None = None
    # Of `acted`, running tasks asked to stop (cancel; SPEC section 10): they end cancelled
    # once their worker interrupts them, unless they finish first.
    cancel_requested: int = 0

    def tally(self, reply: Any) -> None:
        """Count one script reply."""
        if isinstance(reply, Exception):
            logger.warning("bulk %s: a task's script failed: %s", self.action, reply)
            self.skipped[ERROR] += 1
            return
        code = str(reply[0])
        if code in ACTED_CODES:
            self.acted += 1
            self.cancel_requested += code == "requested"
        else:
            self.skipped[REASON_BY_CODE.get(code, ERROR)] += 1


def check_ids(ids: Sequence[str]) -> list[str]:
    """The ids, when there are at most MAX_BULK and each has a task id's shape; else
    ValidationFailed (a 400) naming the bad ones, before anything is written."""
    if len(ids) > MAX_BULK:
        raise ValidationFailed(
            f"{len(ids)} ids in one call; at most {MAX_BULK}: split them, or use a filter",
            [{"loc": ["body", "ids"], "msg": f"at most {MAX_BULK} items"}],
        )
    bad = [
        {"loc": ["body", "ids", i], "msg": "not a task id (a lowercase UUID)"}
        for i, task_id in enumerate(ids)
        if not (isinstance(task_id, str) and TASK_ID.fullmatch(task_id))
    ]
    if bad:
        raise ValidationFailed(f"{len(bad)} of the ids are not task ids", bad[:20])
    return list(ids)


def _call(action: str, k: Keys, task_id: str, settings: Settings) -> tuple[str, Any, Any]:
    """The single action's script call for one task (transitions builds its KEYS and ARGV)."""
    if action == "retry":
        keys, args = transitions.retry_failed_call(k, task_id)
    elif action == "cancel":
        keys, args = transitions.cancel_call(k, task_id, settings)
    else:
        keys, args = transitions.purge_call(k, task_id)
    return SCRIPT_BY_ACTION[action], keys, args


async def _act(
    conn: Conn, result: BulkResult, queue: str, ids: Sequence[str], settings: Settings
) -> None:
    """Run the action on tasks of one queue, CHUNK script calls per round trip."""
    k = conn.queue(queue)
    for first in range(0, len(ids), CHUNK):
        chunk = ids[first : first + CHUNK]
        calls = [_call(result.action, k, task_id, settings) for task_id in chunk]
        for reply in await transitions.run_pipelined(conn, calls, what=f"bulk {result.action}"):
            result.tally(reply)


def _check_action(action: str) -> None:
    if action not in SCRIPT_BY_ACTION:
        raise ValidationFailed(
            f"unknown action {action!r}; one of {', '.join(SCRIPT_BY_ACTION)}",
            [{"loc": ["body", "action"], "msg": "unknown action"}],
        )


async def act_on_ids(
    conn: Conn, action: BulkAction, ids: Sequence[str], settings: Settings
) -> BulkResult:
    """Retry, cancel or purge the tasks with these ids (at most MAX_BULK), wherever their
    queue. Unknown ids are skipped as not_found, repeated ones as duplicate."""
    _check_action(action)
    unique = list(dict.fromkeys(check_ids(ids)))
    result = BulkResult(action)
    result.skipped[DUPLICATE] = len(ids) - len(unique)
    for queue, group in (await queues.locate_many(conn, unique)).items():
        if not queue:  # in no queue there is
            result.skipped[NOT_FOUND] += len(group)
        else:
            await _act(conn, result, queue, group, settings)
    _log(result, f"{len(ids)} ids")
    return result


# --- Filters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Position:
    """Where a filter's walk stands: after entry (score, id) of `queue`'s index, or at its
    top (score None: nothing of that queue taken yet)."""

    queue: str
    score: int | None = None
    task_id: str = ""


def _fingerprint(flt: BulkFilter) -> str:
    """A short digest of the filter: a cursor only continues the filter it came from."""
    text = f"{flt.status or ''}|{flt.queue or ''}|{flt.type or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def encode_cursor(flt: BulkFilter, at: _Position) -> str:
    score = "top" if at.score is None else at.score
    raw = f"b1:{_fingerprint(flt)}:{at.queue}:{score}:{at.task_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(flt: BulkFilter, cursor: str) -> _Position:
    """The position a cursor names; ValidationFailed (a 400) for one that is not a cursor
    of this filter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, digest, queue, score, task_id = raw.split(":")
        position = _Position(queue, None if score == "top" else int(score), task_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_cursor("cursor is not valid") from exc
    valid_id = TASK_ID.fullmatch(task_id) if position.score is not None else task_id == ""
    if version != "b1" or not valid_id or not re.fullmatch(QUEUE_NAME_PATTERN, queue):
        raise _bad_cursor("cursor is not valid")
    if digest != _fingerprint(flt):
        raise _bad_cursor("cursor belongs to another filter: send the filter it came with")
    return position


def _bad_cursor(message: str) -> ValidationFailed:
    return ValidationFailed(message, [{"loc": ["body", "cursor"], "msg": message}])


async def _types(conn: Conn, k: Keys, ids: list[str]) -> list[str | None]:
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(k.task(task_id), "type")
        return cast("list[str | None]", await guarded(pipe.execute()))


async def _select(
    conn: Conn, flt: BulkFilter, queue: str, after: _Position | None, want: int, budget: int
) -> tuple[list[tuple[str, int]], int, _Position | None]:
    """Up to `want` tasks of one queue matching the filter, newest first after `after`, as
    (id, created ms); also the entries walked, and where the walk stopped when its budget
    ran out first (None: it reached the end of the index, or filled `want`).

    Nothing is written meanwhile, so offsets into the index stay valid."""
    k = conn.queue(queue)
    index = k.index_status(flt.status) if flt.status else k.index_all
    if after and after.score is None:
        after = None
    top: int | str = after.score if after and after.score is not None else "+inf"
    picked: list[tuple[str, int]] = []
    offset = walked = 0
    last: _Position | None = None
    while len(picked) < want:
        if walked >= budget:
            return picked, walked, last
        chunk = min(WALK_CHUNK, max(budget - walked, 1))
        entries = cast(
            "list[tuple[str, float]]",
            await guarded(
                conn.redis.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=chunk, withscores=True
                )
            ),
        )
        offset += len(entries)
        # Equal scores come in reverse id order: what an earlier call took is >= its id.
        fresh = [
            (tid, int(sc))
            for tid, sc in entries
            if not (after and int(sc) == after.score and tid >= after.task_id)
        ]
        kinds = await _types(conn, k, [tid for tid, _ in fresh]) if flt.type and fresh else []
        for n, (tid, sc) in enumerate(fresh):
            walked += 1
            last = _Position(queue, sc, tid)
            if not flt.type or kinds[n] == flt.type:
                picked.append((tid, sc))
                if len(picked) == want:
                    return picked, walked, None
        if len(entries) < chunk:
            return picked, walked, None
    return picked, walked, None


async def act_on_filter(
    conn: Conn,
    action: BulkAction,
    flt: BulkFilter,
    settings: Settings,
    *,
    limit: int = MAX_BULK,
    cursor: str | None = None,
) -> BulkResult:
    """Retry, cancel or purge at most `limit` tasks matching the filter, newest first, queue
    by queue (in name order); the result's cursor continues after them when more match."""
    _check_action(action)
    if not 1 <= limit <= MAX_BULK:
        raise ValidationFailed(
            f"limit must be 1..{MAX_BULK}", [{"loc": ["body", "limit"], "msg": "out of range"}]
        )
    after = decode_cursor(flt, cursor) if cursor else None  # a 400 before anything is read
    names = [flt.queue] if flt.queue else await queues.known(conn)
    if after:
        names = [name for name in names if name >= after.queue]
    result = BulkResult(action)
    budget = MAX_WALK
    taken = 0
    for name in names:
        start = after if after and after.queue == name else None
        if budget <= 0:  # walked as far as one call may: the next one starts here
            result.cursor = encode_cursor(flt, start or _Position(name))
            break
        # One more than needed: whether another task matches decides if a cursor is due.
        picked, walked, stopped = await _select(conn, flt, name, start, limit - taken + 1, budget)
        budget -= walked
        more = len(picked) > limit - taken
        picked = picked[: limit - taken]
        await _act(conn, result, name, [tid for tid, _ in picked], settings)
        taken += len(picked)
        if more:  # (nothing picked: the queue before filled the call, this one goes on)
            at = _Position(name, picked[-1][1], picked[-1][0]) if picked else _Position(name)
            result.cursor = encode_cursor(flt, at)
            break
        if stopped is not None:  # walked as far as one call may: go on from there
            result.cursor = encode_cursor(flt, stopped)
            break
    _log(result, f"filter {flt.model_dump(exclude_none=True)}")
    return result


async def matching(conn: Conn, flt: BulkFilter) -> tuple[int, bool]:
    """How many tasks a filter takes (from the counters, O(1)), and whether that is exact:
    with a type it is the most it can take (the counters are not kept per type)."""
    stats = await queries.get_stats(conn, dead_after_seconds=0, queue=flt.queue)
    found = stats.by_status()[flt.status] if flt.status else stats.total_tasks
    return found, flt.type is None


def _log(result: BulkResult, what: str) -> None:
    skipped = {reason: n for reason, n in result.skipped.items() if n}
    logger.info("bulk %s on %s: acted %d, skipped %s", result.action, what, result.acted, skipped)


async def run(
    conn: Conn,
    action: BulkAction,
    settings: Settings,
    *,
    ids: Sequence[str] | None = None,
    flt: BulkFilter | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> BulkResult:
    """One bulk request, as the api and the dashboard take it: `ids`, or `flt` with an
    optional `limit` and `cursor`. ValidationFailed (a 400, nothing written) otherwise."""
    if (ids is None) == (flt is None):
        raise ValidationFailed(
            "give either ids or filter", [{"loc": ["body"], "msg": "ids or filter, one of them"}]
        )
    if ids is not None:
        if limit is not None or cursor is not None:
            raise ValidationFailed(
                "limit and cursor go with filter, not with ids",
                [{"loc": ["body", "limit" if limit is not None else "cursor"], "msg": "not here"}],
            )
        return await act_on_ids(conn, action, ids, settings)
    assert flt is not None
    return await act_on_filter(
        conn, action, flt, settings, limit=MAX_BULK if limit is None else limit, cursor=cursor
    )
