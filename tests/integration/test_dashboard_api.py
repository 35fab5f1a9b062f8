"""The dashboard service over HTTP against a real Redis: health, snapshot, stream, actions, auth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.dashboard import hub as hub_module
from services.dashboard.app import create_app
from shared import codec, heartbeats, monitoring, queue_control, queue_views, queues, transitions
from shared.models import TaskCreate
from shared.queue_control import QueueConfig, QueueLimits, RateLimit
from shared.redis import Conn
from shared.registry import TaskType, register
from shared.settings import Settings
from shared.transitions import Outcome
from tests.conftest import make_settings
from tests.support.api_server import serve
from tests.support.waiting import wait_until


def register_test_types() -> None:
    """Worker types the dashboard tests create (the handlers are given by each test)."""
    import shared.builtin_tasks  # noqa: F401

    for name in ("dash_ok", "dash_flaky", "dash_slow"):
        register(TaskType(name=name, lane="work", handler=lambda payload, ctx: payload))


@contextmanager
def running_dashboard(settings: Settings, tick_seconds: float = 0.1) -> Iterator[str]:
    """The dashboard app, as its service runs it, on a free loopback port."""
    register_test_types()
    with serve(create_app(settings, tick_seconds=tick_seconds)) as base:
        yield base


def datetime_in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def create(conn: Conn, settings: Settings, n: int = 1, **fields: Any) -> list[str]:
    fields.setdefault("type", "dash_ok")
    fields.setdefault("payload", {"n": 1})
    tasks, _ = await transitions.enqueue(conn, [TaskCreate(**fields) for _ in range(n)], settings)
    return [task.id for task in tasks]


async def run_all(conn: Conn, settings: Settings, ok: bool = True) -> list[str]:
    """Claim every pending task and report it completed (or failed): a worker in one call."""
    claimed = await transitions.claim(
        conn, "work", 1000, worker="Worker T", owner="worker-test", lease_seconds=30
    )
    outcomes = [Outcome(c.task.id, c.token, ok, result="done", error="boom") for c in claimed]
    return await transitions.report_outcomes(conn, outcomes, settings) if outcomes else []


@pytest.fixture
async def client(conn: Conn, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with running_dashboard(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await wait_until(
                lambda: _subscribed(http), message="the dashboard subscribed to task_events"
            )
            yield http


async def _subscribed(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/healthz")).json().get("subscribed"))


async def test_dashboard_health_and_heartbeat(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    reply = await client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json()["redis"] == "ok"

    async def counted() -> bool:
        live = await heartbeats.live_counts(conn, settings.dead_after_seconds)
        return live["dashboard"] == 1

    await wait_until(counted, message="the dashboard heartbeat")


async def test_snapshot_counts_depth_and_throughput(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    await create(conn, settings, 3, priority=5)
    await run_all(conn, settings)
    await create(conn, settings, 2, priority=2)
    body = (await client.get("/api/snapshot")).json()
    assert body["counts"]["completed"] == 3
    assert body["counts"]["pending"] == 2
    assert body["counts"]["total"] == 5
    assert body["depth"]["2"] == 2
    assert body["tp"]["to"] - body["tp"]["from"] + 1 == hub_module.WINDOW_SECONDS

    async def charted() -> bool:
        snap = (await client.get("/api/snapshot")).json()
        return sum(point[1] for point in snap["tp"]["points"]) == 3

    await wait_until(charted, message="3 completions in the throughput window")


async def test_stream_sends_a_snapshot_then_compact_updates(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    frames: list[tuple[str, dict[str, Any]]] = []
    async with client.stream("GET", "/api/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        event = ""
        started = time.monotonic()
        ids: list[str] = []
        async for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                frames.append((event, codec.loads(line[6:])))
                if len(frames) == 1:
                    ids = await create(conn, settings, 30)
                seen = {row["id"] for _, body in frames[1:] for row in body["tasks"]}
                if set(ids) <= seen or time.monotonic() - started > 10:
                    break
    assert frames[0][0] == "snapshot"
    assert {name for name, _ in frames[1:]} == {"update"}
    assert set(ids) <= seen
    assert frames[-1][1]["counts"]["pending"] == 30
    updates = [body for _, body in frames[1:]]
    assert all(len(body["tasks"]) <= hub_module.MAX_ROWS for body in updates)
    # 30 creations come as a few aggregated updates, never one message per event.
    assert len(updates) < 30
    row = next(row for body in updates for row in body["tasks"])
    assert set(row) >= {"id", "type", "status", "priority", "created", "updated"}
    assert "payload" not in row


async def test_list_filter_and_details(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    [done] = await create(conn, settings)
    await run_all(conn, settings)
    [waiting] = await create(conn, settings, type="dash_slow")
    page = (await client.get("/api/tasks", params={"status": "completed"})).json()
    assert [row["id"] for row in page["tasks"]] == [done]
    page = (await client.get("/api/tasks", params={"type": "dash_slow"})).json()
    assert [row["id"] for row in page["tasks"]] == [waiting]
    details = (await client.get(f"/api/tasks/{done}")).json()
    assert details["task"]["status"] == "completed"
    assert details["attempts"][0]["outcome"] == "completed"
    assert [e["event"] for e in details["events"]][-1] == "task.completed"
    missing = await client.get("/api/tasks/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "task nope not found", "details": []}
    bad = await client.get("/api/tasks", params={"status": "bogus"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("invalid request")


async def test_retry_and_cancel_use_the_shared_transitions(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    [failed] = await create(conn, settings, max_retries=0)
    await run_all(conn, settings, ok=False)
    reply = await client.post(f"/api/tasks/{failed}/retry")
    assert reply.status_code == 200
    assert reply.json()["task"]["status"] == "pending"
    again = await client.post(f"/api/tasks/{failed}/retry")
    assert again.status_code == 409
    assert again.json()["error"] == f"cannot retry task {failed}: it is pending"

    later = datetime_in(600)
    [scheduled] = await create(conn, settings, scheduled_for=later)
    reply = await client.post(f"/api/tasks/{scheduled}/cancel")
    assert reply.status_code == 200 and reply.json()["task"]["status"] == "cancelled"
    assert (await client.post(f"/api/tasks/{scheduled}/cancel")).status_code == 409
    assert (await client.post("/api/tasks/nope/cancel")).status_code == 404


async def test_api_keys_gate_everything_but_the_page(conn: Conn, redis_server: Any) -> None:
    settings = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="read-key")
    with running_dashboard(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/")).status_code == 200
            assert (await http.get("/static/js/main.js")).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/api/session")).json()["role"] is None
            for path in (
                "/api/snapshot",
                "/api/stream",
                "/api/tasks",
                "/api/tasks/x",
                "/api/queues",
            ):
                reply = await http.get(path)
                assert reply.status_code == 401, path
                assert reply.json()["error"] == "an API key is needed"
            wrong = await http.post("/api/login", json={"key": "nope"})
            assert wrong.status_code == 401 and "tq_dashboard" not in wrong.cookies

            login = await http.post("/api/login", json={"key": "read-key"})
            assert login.json() == {"role": "read"}
            cookie = login.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert "read-key" not in cookie
            assert (await http.get("/api/snapshot")).status_code == 200
            [task_id] = await create(conn, settings, scheduled_for=datetime_in(600))
            refused = await http.post(f"/api/tasks/{task_id}/cancel")
            assert refused.status_code == 403
            assert refused.json()["error"] == "this API key may only read"

            await http.post("/api/logout")
            http.cookies.clear()
            assert (await http.get("/api/snapshot")).status_code == 401
            bearer = {"Authorization": "Bearer admin-key"}
            assert (await http.get("/api/session", headers=bearer)).json()["role"] == "admin"
            done = await http.post(f"/api/tasks/{task_id}/cancel", headers=bearer)
            assert done.status_code == 200

            forged = "v1.admin.9999999999." + "0" * 64
            http.cookies.set("tq_dashboard", forged)
            assert (await http.get("/api/snapshot")).status_code == 401


async def test_security_headers_and_gzip(client: httpx.AsyncClient) -> None:
    page = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = await client.get(
        "/static/vendor/uplot/uPlot.esm.js", headers={"Accept-Encoding": "gzip"}
    )
    assert script.headers.get("content-encoding") == "gzip"
    assert (await client.get("/favicon.ico")).status_code == 200


async def test_throughput_reads_seconds_across_minutes(conn: Conn) -> None:
    base = 1_700_000_000 - 1_700_000_000 % 60 + 58  # two seconds before a minute boundary
    for second, kind, n in ((base, "c", 2), (base + 1, "f", 1), (base + 3, "c", 5)):
        await conn.redis.hincrby(conn.keys.throughput(second // 60), f"{second}:{kind}", n)
    points = await monitoring.throughput(conn, base, base + 3)
    assert points == [(base, 2, 0), (base + 1, 0, 1), (base + 3, 5, 0)]
    assert await monitoring.throughput(conn, base + 1, base + 2) == [(base + 1, 0, 1)]


async def test_task_rows_skip_missing_and_never_carry_payloads(
    conn: Conn, settings: Settings
) -> None:
    register_test_types()
    ids = await create(conn, settings, 2, payload={"big": "x" * 1000})
    rows = await monitoring.task_rows(conn, [ids[1], "missing", ids[0]])
    assert [row["id"] for row in rows] == [ids[1], ids[0]]
    assert all("payload" not in row and row["status"] == "pending" for row in rows)


def test_slow_page_loses_its_backlog_and_gets_a_resync() -> None:
    client = hub_module.Client()
    for n in range(hub_module.CLIENT_BACKLOG + 1):
        client.offer(f"frame {n}".encode())
    assert client.queue.qsize() == 1
    assert client.queue.get_nowait() == hub_module.RESYNC


async def test_hub_tick_is_cheap_and_bounded(conn: Conn, settings: Settings) -> None:
    """Many changes between two ticks still make one message of at most MAX_ROWS rows."""
    register_test_types()
    hub = hub_module.Hub(conn, settings)
    stop = asyncio.Event()
    runner = asyncio.create_task(hub.run(stop))
    try:
        await asyncio.wait_for(hub.subscribed.wait(), 5)
        await create(conn, settings, 300)
        await wait_until(lambda: _seen(hub, 300), message="300 events noted")
        update = await hub.snapshot(full=False)
        assert update["changed"] == 300
        assert len(update["tasks"]) == hub_module.MAX_ROWS
        assert len(codec.dumps(update)) < 20_000
        assert (await hub.snapshot(full=False))["changed"] == 0
    finally:
        stop.set()
        await runner


async def _seen(hub: hub_module.Hub, n: int) -> bool:
    return hub.events_seen >= n


async def _views(conn: Conn, settings: Settings) -> dict[str, queue_views.QueueView]:
    views = await queue_views.views(conn, dead_after_seconds=settings.dead_after_seconds)
    return {view.name: view for view in views}


async def test_queues_list_then_pause_and_resume_one(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    await create(conn, settings, 3, queue="mail")
    await create(conn, settings, 1, queue="reports")
    limits = QueueLimits(rate_limit=RateLimit(tasks=10, per_seconds=1), max_concurrency=5)
    await queue_control.set_limits(conn, "reports", limits)

    listed = (await client.get("/api/queues")).json()["queues"]
    by_name = {row["name"]: row for row in listed}
    assert [row["name"] for row in listed] == ["default", "mail", "reports"]
    assert by_name["mail"] == {
        "name": "mail",
        "paused": False,
        "rate_limit": None,
        "max_concurrency": None,
        "ready": 3,
        "pending": 3,
        "processing": 0,
        "delayed": 0,
        "failed": 0,
        "total": 3,
        "workers": 0,
        "unhandled": {},
    }
    assert by_name["reports"]["rate_limit"] == {"tasks": 10, "per_seconds": 1.0}
    assert by_name["reports"]["max_concurrency"] == 5

    before = codec.now_ms()
    paused = await client.post("/api/queues/mail/pause")
    assert paused.status_code == 200
    body = paused.json()
    assert body["queue"]["name"] == "mail" and body["queue"]["paused"] is True
    assert body["queue"]["ready"] == 3
    assert body["t"] >= before
    views = await _views(conn, settings)
    assert views["mail"].paused is True
    assert views["reports"].paused is False and views["default"].paused is False
    assert (await queue_control.get_config(conn, "mail")).paused is True
    again = (await client.get("/api/queues")).json()["queues"]
    assert [row["name"] for row in again if row["paused"]] == ["mail"]

    resumed = await client.post("/api/queues/mail/resume")
    assert resumed.status_code == 200 and resumed.json()["queue"]["paused"] is False
    assert (await _views(conn, settings))["mail"].paused is False
    # Resuming leaves the other controls alone.
    await client.post("/api/queues/reports/pause")
    await client.post("/api/queues/reports/resume")
    assert await queue_control.get_config(conn, "reports") == QueueConfig(
        rate_limit=RateLimit(tasks=10, per_seconds=1), max_concurrency=5
    )


async def test_queue_actions_refuse_bad_names_and_unknown_queues(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    await create(conn, settings, 1, queue="mail")
    known = await queues.known(conn)
    for bad in ("Mail", "-mail", "a}b", "a:b", "x" * 65):
        for action in ("pause", "resume"):
            reply = await client.post(f"/api/queues/{bad}/{action}")
            assert reply.status_code == 400, (bad, action)
            assert reply.json()["error"].startswith("invalid request: path.name"), reply.json()
    unknown = await client.post("/api/queues/ghost/pause")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown queue 'ghost'", "details": []}
    assert (await client.post("/api/queues/ghost/resume")).status_code == 404
    # Nothing was written: no queue appeared, none was paused.
    assert await queues.known(conn) == known
    assert await queue_control.get_config(conn, "ghost") == QueueConfig()
    assert not any(view.paused for view in (await _views(conn, settings)).values())


async def test_task_rows_carry_their_queue_and_the_list_filters_by_it(
    client: httpx.AsyncClient, conn: Conn, settings: Settings
) -> None:
    [mail] = await create(conn, settings, queue="mail")
    [plain] = await create(conn, settings)
    page = (await client.get("/api/tasks")).json()
    assert {row["id"]: row["queue"] for row in page["tasks"]} == {mail: "mail", plain: "default"}
    page = (await client.get("/api/tasks", params={"queue": "mail"})).json()
    assert [row["id"] for row in page["tasks"]] == [mail]
    bad = await client.get("/api/tasks", params={"queue": "Mail"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("invalid request")


async def test_queue_actions_need_an_operator(conn: Conn, redis_server: Any) -> None:
    settings = make_settings(redis_server.url, api_keys="admin-key", api_read_keys="read-key")
    await create(conn, settings, 2, queue="mail")
    with running_dashboard(settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.post("/api/queues/mail/pause")).status_code == 401
            reader = {"Authorization": "Bearer read-key"}
            listed = await http.get("/api/queues", headers=reader)
            assert listed.status_code == 200
            assert {row["name"] for row in listed.json()["queues"]} == {"default", "mail"}
            refused = await http.post("/api/queues/mail/pause", headers=reader)
            assert refused.status_code == 403
            assert refused.json()["error"] == "this API key may only read"
            assert (await queue_control.get_config(conn, "mail")).paused is False

            admin = {"Authorization": "Bearer admin-key"}
            assert (await http.post("/api/queues/mail/pause", headers=admin)).status_code == 200
            assert (await queue_control.get_config(conn, "mail")).paused is True
            refused = await http.post("/api/queues/mail/resume", headers=reader)
            assert refused.status_code == 403
            assert (await queue_control.get_config(conn, "mail")).paused is True


async def test_every_update_carries_the_queues(conn: Conn, settings: Settings) -> None:
    """A pause shows in the next update, without the page asking (and in the full snapshot)."""
    register_test_types()
    await create(conn, settings, 2, queue="mail")
    hub = hub_module.Hub(conn, settings)
    update = await hub.snapshot(full=False)
    assert [(row["name"], row["paused"], row["ready"]) for row in update["queues"]] == [
        ("default", False, 0),
        ("mail", False, 2),
    ]
    await queue_control.pause(conn, "mail")
    await create(conn, settings, 1, queue="reports")
    update = await hub.snapshot(full=False)
    assert [(row["name"], row["paused"], row["ready"]) for row in update["queues"]] == [
        ("default", False, 0),
        ("mail", True, 2),
        ("reports", False, 1),
    ]
    full = await hub.snapshot(full=True)
    assert full["queues"] == update["queues"]
