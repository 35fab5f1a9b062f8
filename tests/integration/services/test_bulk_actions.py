"""Bulk actions (SPEC section 10) against a real Redis, through the REST API served by uvicorn:
retry, cancel and purge by ids and by filter, skip reasons, the cursor, exact counts over
more than 10,000 tasks, 400s that write nothing, and the operator role."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.api.app import create_app
from shared import bulk, codec, transitions
from shared.models import TaskCreate
from shared.redis import Conn
from shared.settings import Settings
from shared.transitions import Outcome
from tests.conftest import make_settings
from tests.support.api_server import serve
from tests.support.seed import STATUSES, assert_consistent, counts, create, ensure_test_types

# Two queues that sit on different primaries of the test cluster.
Q1, Q2 = "bulk-a", "bulk-b"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
TASK_KEY = re.compile(r":task:[0-9a-f-]{36}$")


@pytest.fixture
async def api(conn: Conn, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    ensure_test_types()
    with serve(create_app(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            yield client


async def seed(conn: Conn, settings: Settings, n: int, **fields: Any) -> list[str]:
    """n tasks created in one call (so they share one created ms: equal index scores)."""
    ensure_test_types()
    tasks, _ = await transitions.enqueue(conn, [create(**fields) for _ in range(n)], settings)
    return [task.id for task in tasks]


async def run_to(
    conn: Conn, settings: Settings, n: int, ok: bool, queue: str | None = None
) -> list[str]:
    """Claim up to n pending tasks of a queue and end them completed (ok) or failed."""
    claimed = await transitions.claim(
        conn, "work", n, worker="W", owner="w-test", lease_seconds=30, queue=queue
    )
    outcomes = [
        Outcome(c.task.id, c.token, ok, result=1, error="boom", queue=queue) for c in claimed
    ]
    await transitions.report_outcomes(conn, outcomes, settings)
    return [c.task.id for c in claimed]


async def finished(
    conn: Conn, settings: Settings, n: int, ok: bool, queue: str | None = None, **fields: Any
) -> list[str]:
    """n tasks of a queue, run to completed (ok) or failed (no retries left)."""
    await seed(conn, settings, n, queue=queue, max_retries=0, **fields)
    return await run_to(conn, settings, n, ok, queue)


async def statuses(conn: Conn, ids: list[str], queue: str | None = None) -> Counter[str]:
    k = conn.queue(queue)
    async with conn.redis.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hget(k.task(task_id), "status")
        found = await pipe.execute()
    return Counter(status or "gone" for status in found)


async def bulk_call(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    reply = await api.post("/api/tasks/bulk", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


def skipped(answer: dict[str, Any]) -> dict[str, int]:
    return {reason: n for reason, n in answer["skipped"].items() if n}


async def test_bulk_retry_by_ids_retries_failed_and_cancelled_and_counts_the_rest(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    failed = await finished(conn, settings, 3, ok=False)
    done = await finished(conn, settings, 1, ok=True)
    [cancelled] = await seed(conn, settings, 1)
    await transitions.cancel(conn, cancelled, settings)
    [pending] = await seed(conn, settings, 1)
    ids = [*failed, *done, cancelled, pending, UNKNOWN_ID, failed[0]]
    answer = await bulk_call(api, action="retry", ids=ids)
    assert answer["action"] == "retry"
    assert answer["acted"] == 4
    assert answer["cursor"] is None
    assert skipped(answer) == {"invalid_status": 2, "not_found": 1, "duplicate": 1}
    assert set(answer["skipped"]) == set(bulk.SKIP_REASONS)
    assert await statuses(conn, [*failed, cancelled]) == {"pending": 4}
    for task_id in failed:  # the single retry's transition: a fresh budget, history kept
        record = await conn.redis.hgetall(conn.keys.task(task_id))
        assert record["retry_count"] == "0"
        events = await conn.redis.lrange(conn.keys.task_events(task_id), 0, -1)
        assert [codec.loads(e)["event"] for e in events][-1] == "task.retried"
    await assert_consistent(conn)


async def test_bulk_cancel_by_ids_across_queues(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    pending = await seed(conn, settings, 3, queue=Q1)
    later = codec.from_ms(codec.now_ms() + 3_600_000)
    scheduled = await seed(conn, settings, 2, queue=Q2, scheduled_for=later)
    done = await finished(conn, settings, 1, ok=True, queue=Q2)
    answer = await bulk_call(api, action="cancel", ids=[*pending, *scheduled, *done, UNKNOWN_ID])
    assert (answer["acted"], answer["cancel_requested"]) == (5, 0)
    assert skipped(answer) == {"invalid_status": 1, "not_found": 1}
    assert await statuses(conn, pending, Q1) == {"cancelled": 3}
    assert await statuses(conn, [*scheduled, *done], Q2) == {"cancelled": 2, "completed": 1}
    await assert_consistent(conn, queue=Q1)
    await assert_consistent(conn, queue=Q2)
    # The cancelled pending ids wait in their ready list, skipped: a worker never runs them.
    assert await run_to(conn, settings, 10, ok=True, queue=Q1) == []
    await assert_consistent(conn, queue=Q1)


async def test_bulk_cancel_asks_running_tasks_to_stop(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    await seed(conn, settings, 2)
    running = await transitions.claim(conn, "work", 2, worker="W", owner="w", lease_seconds=30)
    answer = await bulk_call(api, action="cancel", ids=[c.task.id for c in running])
    assert (answer["acted"], answer["cancel_requested"]) == (2, 2)
    assert skipped(answer) == {}


async def keys_of(conn: Conn, queue: str) -> dict[str, Any]:
    """Every key of a queue, with its content, named without the queue."""
    prefix = conn.queue(queue).prefix
    found: dict[str, Any] = {}
    async for key in conn.redis.scan_iter(match=f"{prefix}*"):
        found[key.removeprefix(prefix)] = await read_key(conn, key)
    return found


async def read_key(conn: Conn, key: str) -> Any:
    kind = await conn.redis.type(key)
    if kind == "hash":
        return await conn.redis.hgetall(key)
    if kind == "list":
        return await conn.redis.lrange(key, 0, -1)
    if kind == "zset":
        return await conn.redis.zrange(key, 0, -1, withscores=True)
    if kind == "set":
        return sorted(await conn.redis.smembers(key))
    return await conn.redis.get(key)


async def test_bulk_purge_deletes_exactly_what_retention_deletes(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    """The same tasks in two queues: one purged by the bulk action, one by retention (its
    time moved past RESULT_TTL_SECONDS). What is left of each is the same, key by key."""
    purged: dict[str, list[str]] = {}
    for queue in (Q1, Q2):
        done = await finished(conn, settings, 1, ok=True, queue=queue, unique_key="nightly")
        done += await finished(conn, settings, 1, ok=True, queue=queue)
        failed = await finished(conn, settings, 2, ok=False, queue=queue)
        [cancelled] = await seed(conn, settings, 1, queue=queue, unique_key="report")
        await transitions.cancel(conn, cancelled, settings, queue=queue)
        await seed(conn, settings, 2, queue=queue)  # pending: not final, kept by both
        purged[queue] = [*done, *failed, cancelled]
    assert await conn.redis.exists(conn.queue(Q1).unique("report")) == 0  # freed at cancel
    # A unique key left behind by hand still names the task: the purge frees it.
    await conn.redis.set(conn.queue(Q1).unique("report"), purged[Q1][-1])
    await conn.redis.set(conn.queue(Q2).unique("report"), purged[Q2][-1])

    pending = await conn.redis.zrange(conn.queue(Q1).index_status("pending"), 0, -1)
    answer = await bulk_call(api, action="purge", ids=[*purged[Q1], *pending])
    assert answer["acted"] == 5
    assert skipped(answer) == {"invalid_status": 2}
    far = codec.now_ms() + settings.result_ttl_seconds * 1000 + 60_000
    k2 = conn.queue(Q2)
    await transitions.run_pipelined(
        conn, [("purge_expired", [k2.expiry, k2.counts, k2.index_all], [far, 1000])]
    )
    assert await statuses(conn, purged[Q1], Q1) == {"gone": 5}
    assert await statuses(conn, purged[Q2], Q2) == {"gone": 5}
    left_bulk, left_retention = await keys_of(conn, Q1), await keys_of(conn, Q2)
    # Ids differ between the queues: compare the key names with ids taken out, and counts.
    shape = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}")
    assert sorted(shape.sub("ID", k) for k in left_bulk) == sorted(
        shape.sub("ID", k) for k in left_retention
    )
    assert left_bulk["counts"] == left_retention["counts"]
    assert "unique:report" not in left_bulk and "unique:nightly" not in left_bulk
    for task_id in purged[Q1]:
        assert not [key for key in left_bulk if task_id in key]
        holding = [key for key, value in left_bulk.items() if task_id in str(value)]
        # A cancelled pending id waits in its ready list (counted as skipped) until a claim
        # drops it, purged or not, as after retention.
        assert holding in ([], ["ready:work:3"]), holding
    assert await counts(conn, queue=Q1) == {"pending": 2, "total": 2}
    await assert_consistent(conn, queue=Q1)
    await assert_consistent(conn, queue=Q2)


async def test_bulk_by_filter_follows_the_cursor_without_skipping_or_repeating(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    # 25 failed "noop" tasks in Q1 (one created ms: equal scores), 5 failed "image" ones,
    # and 8 more failed "noop" ones in Q2 (named order: Q1 first, then Q2).
    a1 = await finished(conn, settings, 25, ok=False, queue=Q1)
    other = await finished(conn, settings, 5, ok=False, queue=Q1, type="image", payload={})
    a2 = await finished(conn, settings, 8, ok=False, queue=Q2)
    flt = {"status": "failed", "type": "noop"}
    acted, cursor, calls = 0, None, 0
    while True:
        body: dict[str, Any] = {"action": "retry", "filter": flt, "limit": 10}
        if cursor:
            body["cursor"] = cursor
        answer = await bulk_call(api, **body)
        calls += 1
        assert skipped(answer) == {}  # a repeat would be skipped as invalid_status
        acted += answer["acted"]
        cursor = answer["cursor"]
        if cursor is None:
            break
        assert answer["acted"] == 10
    assert (acted, calls) == (33, 4)
    assert await statuses(conn, a1, Q1) == {"pending": 25}
    assert await statuses(conn, a2, Q2) == {"pending": 8}
    assert await statuses(conn, other, Q1) == {"failed": 5}
    # Fail them again: they re-enter the failed index behind every cursor handed out.
    await run_to(conn, settings, 25, ok=False, queue=Q1)
    assert await statuses(conn, a1, Q1) == {"failed": 25}


async def test_a_filter_whose_tasks_stay_in_the_index_is_walked_exactly_once(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    """Cancel over every status of Q1: skipped tasks stay where they are, and the cursor
    still takes each task once (acted + skipped adds up to the number of tasks)."""
    await finished(conn, settings, 7, ok=True, queue=Q1)
    await seed(conn, settings, 6, queue=Q1)
    seen, cursor = Counter[str](), None
    while True:
        body: dict[str, Any] = {"action": "cancel", "filter": {"queue": Q1}, "limit": 4}
        if cursor:
            body["cursor"] = cursor
        answer = await bulk_call(api, **body)
        seen["acted"] += answer["acted"]
        seen.update(answer["skipped"])
        cursor = answer["cursor"]
        if cursor is None:
            break
    assert +seen == {"acted": 6, "invalid_status": 7}
    assert await counts(conn, queue=Q1) == {"cancelled": 6, "completed": 7, "total": 13}


async def real_counts(conn: Conn, queue: str | None = None) -> Counter[str]:
    """Tasks per status, read from every record (not from the counters)."""
    prefix = conn.queue(queue).task_prefix
    keys = [key async for key in conn.redis.scan_iter(match=f"{prefix}*", count=1000)]
    keys = [key for key in keys if TASK_KEY.search(key)]
    found: Counter[str] = Counter()
    for first in range(0, len(keys), 1000):
        async with conn.redis.pipeline(transaction=False) as pipe:
            for key in keys[first : first + 1000]:
                pipe.hget(key, "status")
            found.update(await pipe.execute())
    return found


async def stats_match_reality(api: httpx.AsyncClient, conn: Conn) -> dict[str, Any]:
    stats = (await api.get("/api/stats")).json()
    real = await real_counts(conn)
    for status in STATUSES:
        assert stats[f"{status}_count"] == real[status], (status, stats, real)
    assert stats["total_tasks"] == sum(real.values())
    return stats  # type: ignore[no-any-return]


async def test_counts_stay_exact_over_more_than_ten_thousand_tasks(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    await seed(conn, settings, 10_000)
    await seed(conn, settings, 60)
    first = await bulk_call(api, action="cancel", filter={"status": "pending"})
    assert (first["acted"], skipped(first)) == (10_000, {})
    assert first["cursor"] is not None
    stats = await stats_match_reality(api, conn)
    assert (stats["pending_count"], stats["cancelled_count"]) == (60, 10_000)
    second = await bulk_call(
        api, action="cancel", filter={"status": "pending"}, cursor=first["cursor"]
    )
    assert (second["acted"], second["cursor"]) == (60, None)
    stats = await stats_match_reality(api, conn)
    assert stats["cancelled_count"] == 10_060

    retried = await bulk_call(api, action="retry", filter={"status": "cancelled"}, limit=5000)
    assert retried["acted"] == 5000 and retried["cursor"] is not None
    stats = await stats_match_reality(api, conn)
    assert (stats["pending_count"], stats["cancelled_count"]) == (5000, 5060)

    purged = await bulk_call(api, action="purge", filter={})  # 10,000 taken of 10,060
    assert purged["acted"] + purged["skipped"]["invalid_status"] == 10_000
    rest = await bulk_call(api, action="purge", filter={}, cursor=purged["cursor"])
    assert (rest["acted"] + rest["skipped"]["invalid_status"], rest["cursor"]) == (60, None)
    assert purged["acted"] + rest["acted"] == 5060
    stats = await stats_match_reality(api, conn)
    assert (stats["total_tasks"], stats["pending_count"]) == (5000, 5000)
    await assert_consistent(conn)


async def snapshot(conn: Conn) -> dict[str, Any]:
    """Every key and its content (service heartbeats aside: they beat on their own)."""
    found: dict[str, Any] = {}
    async for key in conn.redis.scan_iter(match="*"):
        if ":hb:" not in key and ":instance:" not in key:
            found[key] = await read_key(conn, key)
    return found


BAD_BODIES: list[tuple[str, Any]] = [
    ("too many ids", {"action": "cancel", "ids": [UNKNOWN_ID] * 10_001}),
    ("malformed id after good ones", {"action": "retry", "ids": ["GOOD", "not-a-uuid"]}),
    ("id with a key suffix", {"action": "purge", "ids": [f"{UNKNOWN_ID}:events"]}),
    ("id not a string", {"action": "cancel", "ids": [12]}),
    ("unknown action", {"action": "delete", "ids": []}),
    ("no action", {"ids": []}),
    ("unknown status", {"action": "retry", "filter": {"status": "exploded"}}),
    ("unknown filter field", {"action": "retry", "filter": {"owner": "me"}}),
    ("unknown field", {"action": "retry", "ids": [], "force": True}),
    ("bad queue name", {"action": "purge", "filter": {"queue": "Not A Queue"}}),
    ("ids and filter", {"action": "cancel", "ids": [], "filter": {}}),
    ("neither", {"action": "cancel"}),
    ("cursor with ids", {"action": "cancel", "ids": [], "cursor": "abc"}),
    ("limit 0", {"action": "cancel", "filter": {}, "limit": 0}),
    ("limit too big", {"action": "cancel", "filter": {}, "limit": 10_001}),
    ("bad cursor", {"action": "cancel", "filter": {}, "cursor": "%%%"}),
    ("ids not a list", {"action": "cancel", "ids": UNKNOWN_ID}),
    ("not an object", ["cancel"]),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_bad_requests_are_400_and_write_nothing(
    conn: Conn, settings: Settings, api: httpx.AsyncClient, body: Any
) -> None:
    failed = await finished(conn, settings, 2, ok=False)
    await seed(conn, settings, 2)
    before = await snapshot(conn)
    if isinstance(body, dict) and "GOOD" in body.get("ids", ()):
        body = {**body, "ids": [*failed, "not-a-uuid"]}  # good ids first: none acted on
    reply = await api.post("/api/tasks/bulk", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert set(error) == {"error", "details"} and error["error"] and error["details"]
    assert await snapshot(conn) == before


async def test_a_cursor_only_continues_its_own_filter(
    conn: Conn, settings: Settings, api: httpx.AsyncClient
) -> None:
    await seed(conn, settings, 3)
    answer = await bulk_call(api, action="cancel", filter={"status": "pending"}, limit=1)
    before = await snapshot(conn)
    reply = await api.post(
        "/api/tasks/bulk",
        json={"action": "cancel", "filter": {"status": "scheduled"}, "cursor": answer["cursor"]},
    )
    assert reply.status_code == 400
    assert "another filter" in reply.json()["error"]
    assert await snapshot(conn) == before


async def test_bulk_actions_need_a_key_that_may_write(conn: Conn, redis_server: Any) -> None:
    ensure_test_types()
    settings = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="look-key")
    tasks, _ = await transitions.enqueue(conn, [TaskCreate(type="noop", payload=1)], settings)
    body = {"action": "cancel", "ids": [tasks[0].id]}
    with serve(create_app(settings)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            before = await snapshot(conn)
            nobody = await client.post("/api/tasks/bulk", json=body)
            reader = await client.post(
                "/api/tasks/bulk", json=body, headers={"Authorization": "Bearer look-key"}
            )
            assert (nobody.status_code, reader.status_code) == (401, 403)
            assert set(reader.json()) == {"error", "details"}
            assert await snapshot(conn) == before
            admin = await client.post(
                "/api/tasks/bulk", json=body, headers={"Authorization": "Bearer admin-key"}
            )
            assert admin.status_code == 200, admin.text
            assert admin.json()["acted"] == 1


async def test_the_dashboard_proxies_bulk_actions_for_operators_only(
    conn: Conn, redis_server: Any
) -> None:
    from tests.integration.test_dashboard_api import running_dashboard

    settings = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="look-key")
    ids = await seed(conn, settings, 3)
    body = {"action": "cancel", "ids": ids}
    with running_dashboard(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            reader = await client.post(
                "/api/tasks/bulk", json=body, headers={"Authorization": "Bearer look-key"}
            )
            assert reader.status_code == 403
            bad = await client.post(
                "/api/tasks/bulk",
                json={"action": "cancel", "ids": ["x"]},
                headers={"Authorization": "Bearer admin-key"},
            )
            assert bad.status_code == 400 and bad.json()["details"]
            admin = await client.post(
                "/api/tasks/bulk", json=body, headers={"Authorization": "Bearer admin-key"}
            )
            assert admin.status_code == 200, admin.text
            assert admin.json()["acted"] == 3
            # The count a filtered action's confirmation names: exact, or at most with a type.
            looker = {"Authorization": "Bearer look-key"}
            count = await client.get("/api/bulk/matching?status=cancelled", headers=looker)
            assert count.json() == {"count": 3, "exact": True}
            count = await client.get("/api/bulk/matching?type=noop", headers=looker)
            assert count.json() == {"count": 3, "exact": False}
            bad = await client.get("/api/bulk/matching?status=exploded", headers=looker)
            assert bad.status_code == 400
    assert await statuses(conn, ids) == {"cancelled": 3}


def test_openapi_documents_the_bulk_route(settings: Settings) -> None:
    schema = create_app(settings).openapi()
    operation = schema["paths"]["/api/tasks/bulk"]["post"]
    assert "400" in operation["responses"] and "422" not in operation["responses"]
    answer = schema["components"]["schemas"]["BulkSkipped"]["properties"]
    assert set(answer) == set(bulk.SKIP_REASONS)
    for reason in answer.values():
        assert reason["description"]
