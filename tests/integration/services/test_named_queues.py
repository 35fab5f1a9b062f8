"""Named queues (SPEC section 9, issue 12): routing, worker subscriptions, every service
covering every queue, and data written before queues existed."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.scheduler.recover import recover_once
from shared import codec, queries, queues, registry, transitions
from shared.errors import ValidationFailed
from shared.keys import QUEUES, Keys
from shared.queue_selection import QueueSelection
from shared.redis import Conn
from shared.registry import TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import assert_consistent, counts, create, ensure_test_types
from tests.support.waiting import wait_until

LEGACY = Path(__file__).resolve().parents[2] / "support" / "legacy_v1"


async def legacy_enqueue(conn: Conn, count: int) -> list[str]:
    """Create tasks with the enqueue script as it was before named queues (commit 1ad9a2d,
    kept verbatim in tests/support/legacy_v1), so the records are exactly what an existing
    deployment holds: keys under {default}, no `queue` field, no registry entry."""
    source = (LEGACY / "_lib.lua").read_text() + "\n" + (LEGACY / "enqueue.lua").read_text()
    k = Keys("default")
    now = codec.now_ms()
    ids = [transitions._new_id() for _ in range(count)]
    specs = [
        json.dumps(
            {
                "id": task_id,
                "type": "noop",
                "payload": json.dumps({"n": n}),
                "priority": 3,
                "max_retries": 0,
                "run_at": 0,
                "webhook": None,
                "timeout": None,
                "lane": "work",
            }
        )
        for n, task_id in enumerate(ids)
    ]
    keys = [k.counts, k.index_all, k.delayed, k.idempotency("-")]
    # The layout argument the old scripts took (Keys.layout at 1ad9a2d).
    layout = json.dumps(
        {
            "task": k.task_prefix,
            "index": k.index_prefix,
            "ready": f"{k.prefix}ready:",
            "wake": f"{k.prefix}wake:",
            "held": f"{k.prefix}held:",
            "leases": k.leases,
            "counts": k.counts,
            "channel": "task_events",
        }
    )
    args = [now, k.task_prefix, k.index_prefix, layout, "task_events", "wake", 86400, ""]
    await conn.redis.eval(source, len(keys), *keys, *args, *specs)
    return ids


async def test_tasks_written_before_queues_are_read_run_listed_and_counted(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    ids = await legacy_enqueue(conn, 3)
    assert await conn.redis.hget(Keys("default").task(ids[0]), "queue") is None
    assert not await conn.redis.exists(QUEUES)
    task = await queries.get_task(conn, ids[0])
    assert task.queue == "default" and task.payload == {"n": 0}
    page = await queries.list_tasks(conn)
    assert sorted(t.id for t in page.tasks) == sorted(ids)
    stats = await queries.get_stats(conn, dead_after_seconds=5)
    assert stats.pending_count == 3 and stats.queues["default"].pending_count == 3
    # A task of a new queue next to them: both are listed and counted, each in its queue.
    [mail] = (await transitions.enqueue(conn, [create(queue="mail")], settings))[0]
    stats = await queries.get_stats(conn, dead_after_seconds=5)
    assert (stats.total_tasks, stats.queues["mail"].total_tasks) == (4, 1)
    assert len((await queries.list_tasks(conn)).tasks) == 4

    async def double(payload: Any, ctx: TaskContext) -> int:
        return int(payload["n"]) * 2

    selection = QueueSelection.parse("*")
    async with running(conn, settings, {"noop": double}, queues=selection):
        for task_id in [*ids, mail.id]:
            await wait_until(status_is(conn, task_id, "completed"), message=task_id)
    assert (await queries.get_task(conn, ids[2])).result == 4
    await assert_consistent(conn)
    await assert_consistent(conn, queue="mail")


async def test_a_task_goes_to_its_queue_found_by_id_listed_and_counted(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    [task] = (await transitions.enqueue(conn, [create(queue="mail")], settings))[0]
    assert task.queue == "mail"
    assert await conn.redis.hget(Keys("mail").task(task.id), "queue") == "mail"
    assert not await conn.redis.exists(Keys("default").task(task.id))
    assert await queues.known(conn) == ["default", "mail"]
    assert (await queries.get_task(conn, task.id)).queue == "mail"
    assert (await queries.get_details(conn, task.id)).task.id == task.id
    assert [t.id for t in (await queries.list_tasks(conn, queue="mail")).tasks] == [task.id]
    assert (await queries.list_tasks(conn, queue="default")).tasks == []
    one = await queries.get_stats(conn, dead_after_seconds=5, queue="mail")
    assert (one.total_tasks, one.pending_count, list(one.queues)) == (1, 1, ["mail"])
    cancelled = await transitions.cancel(conn, task.id, settings)
    assert cancelled.status == "cancelled" and cancelled.queue == "mail"
    await assert_consistent(conn, queue="mail")


async def test_a_type_default_queue_and_the_create_field_wins(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    registry.register(registry.TaskType("resize", handler=lambda p, c: p, queue="media"))
    [typed] = (await transitions.enqueue(conn, [create(type="resize")], settings))[0]
    [chosen] = (await transitions.enqueue(conn, [create(type="resize", queue="gpu")], settings))[0]
    [plain] = (await transitions.enqueue(conn, [create()], settings))[0]
    assert (typed.queue, chosen.queue, plain.queue) == ("media", "gpu", "default")
    with pytest.raises(ValueError, match="not a queue name"):
        registry.task("bad", queue="Not A Queue")


async def test_a_batch_naming_two_queues_or_a_bad_name_writes_nothing(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    with pytest.raises(ValidationFailed, match="one queue"):
        await transitions.enqueue(conn, [create(queue="a"), create(queue="b")], settings)
    assert await counts(conn) == {} and await counts(conn, queue="a") == {}
    assert not await conn.redis.exists(QUEUES)


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": "q"}], ids=["fast", "route"])
@pytest.mark.parametrize("name", ["Mail", "-mail", "a" * 65, "mail box", "", 7])
def test_a_queue_name_out_of_shape_is_a_400_on_both_create_paths(
    client: TestClient, conn: Conn, headers: dict[str, str], name: object
) -> None:
    response = client.post(
        "/api/tasks", json={"type": "noop", "payload": 1, "queue": name}, headers=headers
    )
    assert response.status_code == 400, response.text
    assert "queue" in response.text
    assert client.get("/api/stats").json()["total_tasks"] == 0


def test_rest_routes_take_and_filter_by_queue(client: TestClient) -> None:
    made = client.post("/api/tasks", json={"type": "noop", "payload": 1, "queue": "mail"})
    assert made.status_code == 201 and made.json()["queue"] == "mail"
    task_id = made.json()["id"]
    batch = client.post(
        "/api/tasks/batch",
        json={"tasks": [{"type": "noop", "payload": n, "queue": "reports"} for n in range(3)]},
    )
    assert batch.status_code == 201 and {t["queue"] for t in batch.json()["tasks"]} == {"reports"}
    mixed = client.post(
        "/api/tasks/batch",
        json={"tasks": [{"type": "noop", "payload": 1, "queue": q} for q in ("a", "b")]},
    )
    assert mixed.status_code == 400 and "one queue" in mixed.json()["error"]
    assert client.get(f"/api/tasks/{task_id}").json()["queue"] == "mail"
    assert [t["id"] for t in client.get("/api/tasks?queue=mail").json()] == [task_id]
    assert len(client.get("/api/tasks?queue=reports").json()) == 3
    assert len(client.get("/api/tasks").json()) == 4
    assert client.get("/api/tasks?queue=Bad").status_code == 400
    stats = client.get("/api/stats").json()
    assert stats["total_tasks"] == 4 and stats["queues"]["reports"]["pending_count"] == 3
    assert client.get("/api/stats?queue=mail").json()["total_tasks"] == 1
    metrics = client.get("/metrics").text
    assert 'taskqueue_tasks{queue="reports",status="pending"} 3.0' in metrics
    assert client.delete(f"/api/tasks/{task_id}").json()["status"] == "cancelled"


async def queues_started(
    conn: Conn, settings: Settings, per_queue: dict[str, int]
) -> tuple[list[str], Callable[[Any, TaskContext], Awaitable[None]]]:
    """Seed tasks in queues (in the dict's order), and a handler noting each run's queue."""
    ensure_test_types()
    for name, count in per_queue.items():
        await transitions.enqueue(conn, [create(queue=name) for _ in range(count)], settings)
    started: list[str] = []

    async def note(payload: Any, ctx: TaskContext) -> None:
        started.append(ctx.task.queue)

    return started, note


async def test_strict_order_runs_a_later_queue_only_while_earlier_ones_are_empty(
    conn: Conn, settings: Settings
) -> None:
    # Created in the reverse of their order.
    started, note = await queues_started(conn, settings, {"low": 5, "default": 5, "critical": 5})
    strict = QueueSelection.parse("critical,default,low")
    async with running(conn, settings, {"noop": note}, concurrency=1, queues=strict):
        await wait_until(lambda: len(started) == 15, message="all fifteen")
    assert started == ["critical"] * 5 + ["default"] * 5 + ["low"] * 5


async def test_weights_share_the_claims_while_every_queue_has_work(
    conn: Conn, settings: Settings
) -> None:
    started, note = await queues_started(conn, settings, {"a": 300, "b": 300, "c": 300})
    weighted = QueueSelection.parse("a:6,b:3,c:1")
    async with running(conn, settings, {"noop": note}, concurrency=1, queues=weighted):
        await wait_until(lambda: len(started) >= 300, message="300 runs")
    shares = Counter(started[:300])
    # Expected 180 / 90 / 30; the bounds are about four standard deviations wide.
    assert 140 <= shares["a"] <= 220 and 55 <= shares["b"] <= 125 and 8 <= shares["c"] <= 55


async def test_a_queue_found_empty_is_claimed_last_in_weighted_order_not_in_strict(
    conn: Conn, settings: Settings
) -> None:
    """Draining, a weighted round that starts with a queue that just ran dry pays a round
    trip for nothing: such a queue goes last for DRY_SECONDS, and as the others fill the
    slots it is mostly not claimed at all. Strict order never moves: there the empty `a`
    is claimed first in every round."""
    ensure_test_types()
    await queues.register(conn, "a")  # known, and empty
    await transitions.enqueue(conn, [create(queue="b") for _ in range(600)], settings)

    async def slow(payload: Any, ctx: TaskContext) -> None:
        await asyncio.sleep(0.002)

    claims: dict[str, Counter[str]] = {}
    for spec in ("a:1000,b:1", "a,b"):
        selection = QueueSelection.parse(spec)
        seen = claims[spec] = Counter()
        async with running(conn, settings, {"noop": slow}, concurrency=2, queues=selection) as c:
            original = c._claim

            async def counted(
                queue: str,
                count: int,
                *,
                offer: bool,
                seen: Counter[str] = seen,
                original: Any = original,
            ) -> Any:
                seen[queue] += 1
                return await original(queue, count, offer=offer)

            c._claim = counted  # type: ignore[method-assign]
            await wait_until(lambda seen=seen: seen["b"] >= 60, message="sixty claims of b")
    weighted, strict = claims["a:1000,b:1"], claims["a,b"]
    assert weighted["a"] * 3 <= weighted["b"], weighted
    assert strict["a"] >= strict["b"], strict


def test_worker_queues_parse_and_order() -> None:
    assert QueueSelection.parse("*").mode == "all"
    assert QueueSelection.parse("a, b").queues == ("a", "b")
    assert QueueSelection.parse("a:6,b:1").weights == (6, 1)
    for bad in ("A", "a,a", "a:0", "a:x", "a:1,b", "a:1001"):
        with pytest.raises(ValueError, match="WORKER_QUEUES"):
            QueueSelection.parse(bad)
    rng = random.Random(3)
    firsts = Counter(QueueSelection.parse("a:9,b:1").order([], rng)[0] for _ in range(2000))
    assert 1700 <= firsts["a"] <= 1900
    assert sorted(QueueSelection.parse("*").order(["x", "y", "z"], rng)) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="WORKER_QUEUES"):
        Settings(worker_queues="a:1,b", _env_file=None)  # type: ignore[call-arg]


async def test_an_idle_worker_on_five_queues_is_handed_a_task_of_any_of_them(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    names = ["q1", "q2", "q3", "q4", "q5"]
    for name in names:
        await queues.register(conn, name)
    done, release = asyncio.Event(), asyncio.Event()

    async def finish(payload: Any, ctx: TaskContext) -> str:
        done.set()
        await release.wait()  # held, so the status read below cannot race its completion
        return ctx.task.queue

    selection = QueueSelection.parse(",".join(names))
    async with running(conn, settings, {"noop": finish}, concurrency=2, queues=selection) as c:

        async def offering_everywhere() -> bool:
            lengths = [await conn.redis.llen(Keys(n).idle("work")) for n in names]
            return all(lengths) and all(n in c.reading for n in names)

        await wait_until(offering_everywhere, message="offers in all five queues")
        [task] = (await transitions.enqueue(conn, [create(queue="q4")], settings))[0]
        # Handed over inside the enqueue script: claimed before the create even returned.
        record = await conn.redis.hget(Keys("q4").task(task.id), "status")
        assert record == "processing"
        await asyncio.wait_for(done.wait(), 5)
        release.set()
        await wait_until(status_is(conn, task.id, "completed"), message="completion")


async def test_recovery_retention_and_promotion_cover_every_queue(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    await transitions.enqueue(conn, [create(queue="mail")], settings)
    [lost] = await transitions.claim(
        conn, "work", 1, worker="W", owner="gone", lease_seconds=0.001, queue="mail"
    )
    await wait_until(
        lambda: _lease_passed(conn, lost.task.id), message="the lease to pass", interval=0.01
    )
    assert await recover_once(conn, settings) == 1
    assert (await queries.get_task(conn, lost.task.id)).status == "pending"
    await assert_consistent(conn, queue="mail")


async def _lease_passed(conn: Conn, task_id: str) -> bool:
    deadline = await conn.redis.zscore(Keys("mail").leases, task_id)
    return deadline is not None and deadline < await conn.server_ms()
