"""Poison input: a record that does not decode, a handler that raises anything, hangs past its
timeout or returns what cannot be stored. Each time the task ends with a clear error, the
consumer goes on, and nothing else is affected (counts stay exact, other tasks complete)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import queries
from shared.redis import Conn
from shared.registry import Handler, TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import assert_consistent, ensure_test_types, seed_tasks
from tests.support.waiting import wait_until


async def ok(payload: Any, ctx: TaskContext) -> str:
    return "fine"


async def run_all(
    conn: Conn, settings: Settings, handler: Handler, *, concurrency: int = 4, **fields: Any
) -> str:
    """Seed one poisoned `noop` task between good `image` tasks, run a consumer until all are
    final (and one created afterwards completes); returns the poisoned task's error."""
    fields.setdefault("max_retries", 0)
    [before] = await seed_tasks(conn, settings, type="image")
    [bad] = await seed_tasks(conn, settings, type="noop", **fields)
    [after] = await seed_tasks(conn, settings, type="image")
    async with running(conn, settings, {"noop": handler, "image": ok}, concurrency=concurrency):
        await wait_until(status_is(conn, bad.id, "failed"), message="the poisoned task to fail")
        for good in (before, after):
            await wait_until(status_is(conn, good.id, "completed"), message="good tasks")
        # The consumer is still claiming: a task created now completes too.
        [later] = await seed_tasks(conn, settings, type="image")
        await wait_until(status_is(conn, later.id, "completed"), message="a later task")
    await assert_consistent(conn)
    return (await queries.get_task(conn, bad.id)).error or ""


# -- records that cannot be decoded ------------------------------------------------------------

CORRUPTIONS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "payload-not-json": ({"payload": "{not json"}, [], "field 'payload' is malformed"),
    "type-missing": ({}, ["type"], "field 'type' is missing"),
    "priority-not-int": ({"priority": "urgent"}, [], "field 'priority' is malformed"),
    "timeout-not-number": ({"timeout": "soon"}, [], "field 'timeout' is malformed"),
    "max-retries-not-int": ({"max_retries": "many"}, [], "field 'max_retries' is malformed"),
    "result-not-json": ({"result": "[1,"}, [], "field 'result' is malformed"),
    "created-not-number": ({"created": "yesterday"}, [], "field 'created' was malformed"),
    "attempt-not-number": ({"attempt": "1.5"}, [], "field 'attempt' was malformed"),
}


@pytest.mark.parametrize("case", CORRUPTIONS, ids=list(CORRUPTIONS))
async def test_undecodable_record_fails_without_retry_and_others_run(
    conn: Conn, settings: Settings, case: str
) -> None:
    changes, removed, expected = CORRUPTIONS[case]
    calls = 0

    async def counted(payload: Any, ctx: TaskContext) -> str:
        nonlocal calls
        calls += 1
        return "ran"

    tasks = await seed_tasks(conn, settings, count=5, max_retries=3)
    poisoned = tasks[2]
    key = conn.keys.task(poisoned.id)
    if changes:
        await conn.redis.hset(key, mapping=changes)
    if removed:
        await conn.redis.hdel(key, *removed)
    async with running(conn, settings, {"noop": counted}, concurrency=8):
        await wait_until(status_is(conn, poisoned.id, "failed"), message="the corrupt record")
        for task in tasks[:2] + tasks[3:]:
            await wait_until(status_is(conn, task.id, "completed"), message="the others")
    failed = await queries.get_task(conn, poisoned.id)
    assert failed.error and expected in failed.error and "cannot be decoded" in failed.error
    assert failed.retry_count == 0 and calls == 4  # never retried, never handed to a handler
    await assert_consistent(conn)


async def test_api_reads_and_lists_a_corrupt_record_without_error(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    [bad, good] = await seed_tasks(conn, settings, count=2)
    await conn.redis.hset(conn.keys.task(bad.id), mapping={"payload": "{", "created": "x"})
    with TestClient(create_app(settings)) as client:
        one = client.get(f"/api/tasks/{bad.id}")
        assert one.status_code == 200 and "field 'payload'" in one.json()["error"]
        details = client.get(f"/api/tasks/{bad.id}/details")
        assert details.status_code == 200 and details.json()["task"]["error"] == one.json()["error"]
        listed = client.get("/api/tasks")
        assert listed.status_code == 200 and {t["id"] for t in listed.json()} == {bad.id, good.id}


# -- handlers that raise anything --------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class Custom(BaseException):
    pass


RAISED: dict[str, tuple[BaseException, str]] = {
    "SystemExit": (SystemExit(3), "SystemExit: 3"),
    "KeyboardInterrupt": (KeyboardInterrupt(), "KeyboardInterrupt"),
    "GeneratorExit": (GeneratorExit(), "GeneratorExit"),
    "BaseException-subclass": (Custom("odd"), "Custom: odd"),
    "CancelledError-from-handler": (asyncio.CancelledError("inner"), "CancelledError: inner"),
    "unprintable": (Unprintable(), "Unprintable: <unprintable message>"),
    "MemoryError": (MemoryError("big"), "MemoryError: big"),
}


@pytest.mark.parametrize("name", RAISED, ids=list(RAISED))
@pytest.mark.parametrize("kind", ["async", "plain"])
async def test_handler_raising_anything_fails_the_task_and_the_worker_goes_on(
    conn: Conn, settings: Settings, name: str, kind: str
) -> None:
    exc, expected = RAISED[name]

    async def raise_async(payload: Any, ctx: TaskContext) -> None:
        raise exc

    def raise_plain(payload: Any, ctx: TaskContext) -> None:
        raise exc

    handler: Handler = raise_async if kind == "async" else raise_plain
    error = await run_all(conn, settings, handler, concurrency=1)
    assert error == expected


# -- handlers that hang past their timeout -----------------------------------------------------


async def test_async_handler_that_ignores_cancellation_is_abandoned_at_its_timeout(
    conn: Conn, settings: Settings
) -> None:
    release = asyncio.Event()

    async def stubborn(payload: Any, ctx: TaskContext) -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # swallows every cancellation

    try:
        error = await run_all(conn, settings, stubborn, concurrency=1, timeout_seconds=0.2)
    finally:
        release.set()
    assert error == "timed out after 0.2s"


async def test_plain_handler_that_hangs_frees_its_slot_and_does_not_block_shutdown(
    conn: Conn, settings: Settings
) -> None:
    release = threading.Event()

    def hang(payload: Any, ctx: TaskContext) -> None:
        release.wait(30)

    started = time.monotonic()
    try:
        error = await run_all(conn, settings, hang, concurrency=1, timeout_seconds=0.2)
    finally:
        release.set()
    assert error == "timed out after 0.2s"
    assert time.monotonic() - started < 10  # the stop did not wait for the stuck thread


async def test_many_hung_plain_handlers_do_not_starve_later_plain_handlers(
    conn: Conn, settings: Settings
) -> None:
    release = threading.Event()

    def maybe_hang(payload: Any, ctx: TaskContext) -> str:
        if payload["n"] < 20:
            release.wait(30)
        return "ran"

    hung = [
        (await seed_tasks(conn, settings, payload={"n": n}, max_retries=0, timeout_seconds=0.2))[0]
        for n in range(20)
    ]
    [fine] = await seed_tasks(conn, settings, payload={"n": 99})
    try:
        async with running(conn, settings, {"noop": maybe_hang}, concurrency=8):
            await wait_until(status_is(conn, fine.id, "completed"), message="a later plain task")
            for task in hung:
                await wait_until(status_is(conn, task.id, "failed"), message="the hung ones")
    finally:
        release.set()
    await assert_consistent(conn)


# -- results that cannot be stored --------------------------------------------------------------


def _circular() -> Any:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


RESULTS: dict[str, tuple[Any, str]] = {
    "object": (object(), "result is not JSON-serialisable"),
    "int-beyond-64-bits": (2**80, "Integer exceeds 64-bit range"),
    "circular": (_circular(), "result is not JSON-serialisable"),
    "set": ({1, 2}, "result is not JSON-serialisable"),
    "too-large": ("x" * (1024 * 1024 + 1), "the limit is 1048576"),
}


@pytest.mark.parametrize("name", RESULTS, ids=list(RESULTS))
async def test_result_that_cannot_be_stored_fails_clearly(
    conn: Conn, settings: Settings, name: str
) -> None:
    value, expected = RESULTS[name]

    async def returns(payload: Any, ctx: TaskContext) -> Any:
        return value

    error = await run_all(conn, settings, returns, concurrency=1)
    assert expected in error, error


async def test_an_events_key_of_the_wrong_type_fails_only_its_task(
    conn: Conn, settings: Settings
) -> None:
    """claim.lua used to fail half-way on it, stranding every id it had popped after it."""
    tasks = await seed_tasks(conn, settings, count=4, max_retries=2)
    await conn.redis.set(conn.keys.task_events(tasks[1].id), "not a list")
    async with running(conn, settings, {"noop": ok}, concurrency=4):
        await wait_until(status_is(conn, tasks[1].id, "failed"), message="the corrupt one")
        for task in (tasks[0], *tasks[2:]):
            await wait_until(status_is(conn, task.id, "completed"), message="the others")
    error = (await queries.get_task(conn, tasks[1].id)).error or ""
    assert "events key was not a list" in error
    await assert_consistent(conn)


async def test_an_outcome_redis_refuses_does_not_stop_the_others_being_reported(
    conn: Conn, settings: Settings
) -> None:
    """A script error on one outcome used to make the flusher retry the whole batch forever,
    so no later outcome was recorded. Here the task's owner points at a key of another type."""

    async def sabotage(payload: Any, ctx: TaskContext) -> str:
        if payload.get("bad"):
            await conn.redis.hset(conn.keys.task(ctx.task.id), "owner", "bogus")
            await conn.redis.set(conn.keys.held("bogus"), "not a set")
        return "ran"

    tasks = await seed_tasks(conn, settings, count=3)
    await seed_tasks(conn, settings, payload={"bad": True})
    async with running(conn, settings, {"noop": sabotage}, concurrency=4):
        for task in tasks:
            await wait_until(status_is(conn, task.id, "completed"), message="the others")
        [later] = await seed_tasks(conn, settings)
        await wait_until(status_is(conn, later.id, "completed"), message="a later task")
