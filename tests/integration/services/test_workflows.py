"""Task graphs (SPEC section 11) through every create path (REST route, ASGI fast path, batch,
producer) and the real consumer, on a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import queries
from shared.errors import DependencyNotFound, ValidationFailed
from shared.producer import Producer
from shared.redis import Conn, create_redis
from shared.registry import TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import assert_consistent, counts, ensure_test_types, seed_tasks
from tests.support.snapshot import snapshot
from tests.support.waiting import wait_until

UNKNOWN = "3f1c9d2e-0000-4000-8000-00000000abcd"


@pytest.fixture
def client(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def producer(conn: Conn, settings: Settings) -> AsyncIterator[Producer]:
    ensure_test_types()
    async with Producer(conn, settings) as p:
        yield p


def noop(**fields: Any) -> dict[str, Any]:
    return {"type": "noop", "payload": {"n": 1}, **fields}


async def test_a_graph_created_in_one_batch_runs_in_order(
    client: TestClient, conn: Conn, settings: Settings
) -> None:
    body = {
        "tasks": [
            noop(ref="extract"),
            noop(ref="left", depends_on=["extract"]),
            noop(ref="right", depends_on=["extract"]),
            noop(ref="load", depends_on=["left", "right"]),
        ]
    }
    answer = client.post("/api/tasks/batch", json=body)
    assert answer.status_code == 201, answer.text
    created = answer.json()
    ids = [task["id"] for task in created["tasks"]]
    assert created["refs"] == dict(zip(["extract", "left", "right", "load"], ids, strict=True))
    assert [t["status"] for t in created["tasks"]] == ["pending", "waiting", "waiting", "waiting"]
    assert created["tasks"][3]["depends_on"] == ids[1:3]
    assert client.get("/api/stats").json()["waiting_count"] == 3
    listed = client.get("/api/tasks", params={"status": "waiting"}).json()
    assert sorted(t["id"] for t in listed) == sorted(ids[1:])
    order: list[str] = []

    async def record(payload: Any, ctx: TaskContext) -> Any:
        order.append(ctx.task.id)
        return sorted(ctx.dependency_results)

    async with running(conn, settings, {"noop": record}):
        await wait_until(status_is(conn, ids[3], "completed"), message="the graph ran")
    assert order[0] == ids[0] and order[3] == ids[3] and set(order[1:3]) == set(ids[1:3])
    assert (await queries.get_task(conn, ids[3])).result == sorted(ids[1:3])
    details = client.get(f"/api/tasks/{ids[0]}/details").json()
    assert sorted(d["id"] for d in details["dependents"]) == sorted(ids[1:3])
    assert {d["status"] for d in details["dependents"]} == {"completed"}
    join = client.get(f"/api/tasks/{ids[3]}/details").json()
    assert [d["id"] for d in join["depends_on"]] == ids[1:3]
    assert client.get("/api/stats").json()["waiting_count"] == 0
    await assert_consistent(conn)


def bad_inputs(mine: str, other: str) -> list[tuple[str, list[dict[str, Any]], int]]:
    """(what, items, status): each refused on every path that can carry it."""
    return [
        ("unknown id", [noop(depends_on=[UNKNOWN])], 404),
        ("another queue's id", [noop(depends_on=[mine, other])], 404),
        ("unknown ref", [noop(depends_on=["nope"])], 400),
        ("a task naming itself", [noop(ref="me", depends_on=["me"])], 400),
        ("a cycle", [noop(ref="a", depends_on=["b"]), noop(ref="b", depends_on=["a"])], 400),
        ("a duplicate ref", [noop(ref="a"), noop(ref="a")], 400),
        ("a ref of a later item", [noop(depends_on=["b"]), noop(ref="b")], 400),
        ("not a list", [noop(depends_on=mine)], 400),
    ]


async def test_every_bad_graph_is_refused_on_every_path_and_writes_nothing(
    client: TestClient, conn: Conn, settings: Settings
) -> None:
    [other] = await seed_tasks(conn, settings, queue="other")
    [mine] = await seed_tasks(conn, settings)
    before = await snapshot(conn)
    json_types = ("application/json", "application/merge-patch+json")  # fast path, route
    for what, items, code in bad_inputs(mine.id, other.id):
        answers = [client.post("/api/tasks/batch", json={"tasks": items})]
        if len(items) == 1:
            for content_type in json_types:
                answers.append(
                    client.post(
                        "/api/tasks",
                        content=json.dumps(items[0]),
                        headers={"content-type": content_type},
                    )
                )
            answers.append(
                client.post("/api/tasks", json=items[0], headers={"Idempotency-Key": "k1"})
            )
        for answer in answers:
            assert answer.status_code == code, (what, answer.text)
            assert answer.json()["error"], what
        assert await snapshot(conn) == before, what


async def test_the_producer_checks_dependencies_as_the_api_does(
    producer: Producer, conn: Conn, settings: Settings
) -> None:
    [other] = await seed_tasks(conn, settings, queue="other")
    [mine] = await seed_tasks(conn, settings)
    before = await snapshot(conn)
    for what, items, code in bad_inputs(mine.id, other.id):
        if what == "not a list":
            continue
        error = DependencyNotFound if code == 404 else ValidationFailed
        with pytest.raises(error):
            await producer.enqueue_many(items)
        if len(items) == 1 and "ref" not in items[0]:
            with pytest.raises(error):
                await producer.enqueue("noop", {"n": 1}, depends_on=items[0]["depends_on"])
        assert await snapshot(conn) == before, what
    # Coalesced creates: the one with an unknown dependency fails alone.
    results = await asyncio.gather(
        *(producer.enqueue("noop", {"n": n}) for n in range(5)),
        producer.enqueue("noop", {"n": 9}, depends_on=[UNKNOWN]),
        producer.enqueue("noop", {"n": 10}, depends_on=[mine.id]),
        return_exceptions=True,
    )
    assert isinstance(results[5], DependencyNotFound)
    assert [getattr(r, "status", None) for r in results[:5]] == ["pending"] * 5
    assert getattr(results[6], "status", None) == "waiting"
    tasks = await producer.enqueue_many([noop(ref="a"), noop(depends_on=["a", mine.id])])
    assert tasks[1].depends_on == [tasks[0].id, mine.id] and tasks[1].status == "waiting"


async def test_a_refused_create_leaves_no_new_queue_behind(
    client: TestClient, conn: Conn, settings: Settings
) -> None:
    """A create naming a new queue whose dependency is not a task of it is a 404 on every
    path, and the new queue's name is not registered (it would show in GET /api/queues and
    be polled by workers of `*` for ever)."""
    [other] = await seed_tasks(conn, settings, queue="other")
    before = await snapshot(conn)
    for n, path in enumerate(("/api/tasks", "/api/tasks/batch")):
        queue = f"brand-new-{n}"
        item = noop(queue=queue, depends_on=[other.id])
        answer = client.post(path, json={"tasks": [item]} if path.endswith("batch") else item)
        assert answer.status_code == 404, answer.text
        assert other.id in answer.json()["error"]
        assert queue not in client.get("/api/queues").text
    fresh = create_redis(settings)  # as a new process: no queue registered by it yet
    try:
        await fresh.load_scripts()
        async with Producer(fresh, settings) as producer:
            with pytest.raises(DependencyNotFound):
                await producer.enqueue("noop", {"n": 1}, queue="brand-new-2", depends_on=[other.id])
            with pytest.raises(DependencyNotFound):
                await producer.enqueue_many([noop(queue="brand-new-3", depends_on=[UNKNOWN])])
    finally:
        await fresh.aclose()
    assert await snapshot(conn) == before


async def test_a_fan_in_of_1000_runs_its_join_after_all_of_them(
    producer: Producer, conn: Conn, settings: Settings
) -> None:
    leaves = [noop(ref=f"leaf{i}", payload={"n": i}) for i in range(1000)]
    join = noop(ref="join", type="noop", depends_on=[f"leaf{i}" for i in range(1000)])
    tasks = await producer.enqueue_many([*leaves, join])
    assert tasks[-1].status == "waiting" and len(tasks[-1].depends_on) == 1000
    done: set[str] = set()
    seen: dict[str, Any] = {}

    async def handler(payload: Any, ctx: TaskContext) -> Any:
        if ctx.task.depends_on:
            seen["done_before_join"] = len(done)
            seen["results"] = ctx.dependency_results
            return "joined"
        assert ctx.dependency_results == {}
        done.add(ctx.task.id)
        return payload["n"]

    async with running(conn, settings, {"noop": handler}, concurrency=64):
        await wait_until(
            status_is(conn, tasks[-1].id, "completed"), timeout=60, message="the join ran"
        )
    assert seen["done_before_join"] == 1000
    assert seen["results"] == {task.id: i for i, task in enumerate(tasks[:-1])}
    assert await counts(conn) == {"total": 1001, "completed": 1001}
    await assert_consistent(conn)


async def test_plain_handlers_see_dependency_results_too(conn: Conn, settings: Settings) -> None:
    ensure_test_types()
    from shared import transitions
    from tests.support.seed import create

    _a, _b, c = (
        await transitions.enqueue(
            conn,
            [
                create(ref="a", payload={"n": 2}),
                create(ref="b", payload={"n": 3}),
                create(depends_on=["a", "b"], payload={"n": 0}),
            ],
            settings,
        )
    )[0]

    def threaded(payload: Any, ctx: TaskContext) -> Any:
        return payload["n"] + sum(ctx.dependency_results.values())

    async with running(conn, settings, {"noop": threaded}):
        await wait_until(status_is(conn, c.id, "completed"), message="the join ran")
    assert (await queries.get_task(conn, c.id)).result == 5


async def test_cancel_of_a_waiting_task_and_retry_of_a_cancelled_dependent(
    client: TestClient, conn: Conn
) -> None:
    body = {"tasks": [noop(ref="a"), noop(ref="b", depends_on=["a"]), noop(depends_on=["b"])]}
    _a, b, c = client.post("/api/tasks/batch", json=body).json()["tasks"]
    cancelled = client.delete(f"/api/tasks/{b['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get(f"/api/tasks/{c['id']}").json()["error"] == (
        f"dependency {b['id']} was cancelled"
    )
    refused = client.post(f"/api/tasks/{c['id']}/retry")
    assert refused.status_code == 409 and b["id"] in refused.json()["error"]
    assert client.post(f"/api/tasks/{b['id']}/retry").status_code == 200
    assert client.get(f"/api/tasks/{b['id']}").json()["status"] == "waiting"
    assert client.post(f"/api/tasks/{c['id']}/retry").status_code == 200
    assert client.get(f"/api/tasks/{c['id']}").json()["status"] == "waiting"
    assert client.get("/api/stats").json()["waiting_count"] == 2
    await assert_consistent(conn)
