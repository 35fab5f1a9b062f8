"""/metrics (SPEC section 13): the exact gauges, and the histograms and counters the outcome
scripts keep in each queue's metrics HASH, read back through prometheus-client's parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.api.app import create_app
from shared import heartbeats, metrics, queries, transitions
from shared.redis import Conn
from shared.registry import TaskContext
from shared.settings import Settings
from tests.integration.services.test_consumer import running, status_is
from tests.support.seed import create, ensure_test_types, seed_tasks
from tests.support.waiting import wait_until


def _samples(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels.items() >= labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def _metrics_text(settings: Settings) -> str:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def _scrape(settings: Settings) -> dict[str, list[Sample]]:
    return _samples(await _metrics_text(settings))


async def test_runs_are_counted_by_queue_type_and_outcome(conn: Conn, settings: Settings) -> None:
    ensure_test_types()

    async def handler(payload: Any, ctx: TaskContext) -> str:
        if payload == "boom":
            raise ValueError("boom")
        return "ok"

    ok = await seed_tasks(conn, settings, count=3, payload="fine")
    [retried] = await seed_tasks(conn, settings, payload="boom", max_retries=1)
    [failed] = await seed_tasks(conn, settings, payload="boom", max_retries=0)
    async with running(conn, settings, {"noop": handler}):
        for task in ok:
            await wait_until(status_is(conn, task.id, "completed"))
        await wait_until(status_is(conn, retried.id, "retrying"))
        await wait_until(status_is(conn, failed.id, "failed"))

    got = await _scrape(settings)
    run = got["taskqueue_task_run_seconds"]
    labels = {"queue": "default", "type": "noop"}
    assert _value(run, "taskqueue_task_run_seconds_count", **labels, outcome="completed") == 3
    assert _value(run, "taskqueue_task_run_seconds_count", **labels, outcome="retrying") == 1
    assert _value(run, "taskqueue_task_run_seconds_count", **labels, outcome="failed") == 1
    # Buckets are cumulative and end with +Inf = count; a trivial handler runs in under 1 s.
    buckets = [
        s for s in run
        if s.name == "taskqueue_task_run_seconds_bucket" and s.labels["outcome"] == "completed"
    ]  # fmt: skip
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)
    assert _value(buckets, "taskqueue_task_run_seconds_bucket", le="1.0") == 3
    wait = got["taskqueue_task_wait_seconds"]
    assert _value(wait, "taskqueue_task_wait_seconds_count", **labels, outcome="completed") == 3
    assert _value(wait, "taskqueue_task_wait_seconds_sum", **labels, outcome="completed") >= 0
    retries = got["taskqueue_task_retries"]
    assert _value(retries, "taskqueue_task_retries_total", queue="default", type="noop") == 1
    # The gauges are the exact counts, as before.
    tasks = got["taskqueue_tasks"]
    assert _value(tasks, "taskqueue_tasks", queue="default", status="completed") == 3
    assert _value(tasks, "taskqueue_tasks", queue="default", status="failed") == 1


async def test_a_retry_waits_from_its_due_time_not_from_its_creation(
    conn: Conn, settings: Settings
) -> None:
    """The wait of a re-run counts from when it became due (the retry's time), so a task that
    ran for a while and was retried does not show that run as queue wait."""
    ensure_test_types()
    [task], _ = await transitions.enqueue(conn, [create(max_retries=1)], settings)
    [claimed] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=30)
    key = conn.queue("default").task(task.id)
    created = int(await conn.redis.hget(key, "created"))
    # The run started 60 s after the create (a long wait), then failed and was retried.
    await conn.redis.hset(key, "started", created + 60_000)
    await transitions.fail(conn, task.id, claimed.token, "boom", settings)
    due = int(await conn.redis.hget(key, "due"))
    assert due > created
    tally = await conn.redis.hgetall(conn.queue("default").metrics)
    assert tally["wait_sum|noop|retrying"] == "60000"


async def test_a_lost_workers_run_is_a_recovery_not_a_timed_run(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    await transitions.enqueue(conn, [create()], settings)
    [claimed] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=30)
    reply = await transitions.fail(
        conn, claimed.task.id, None, "worker lost", settings, mode="lost:w-1"
    )
    assert reply == ["recovered"]
    snapshot = await metrics.read(conn, settings.dead_after_seconds)
    tally = snapshot.tallies["default"]
    assert tally == {"recoveries|noop": "1"}  # no run time: its end is unknown
    text = metrics.render(snapshot).decode()
    assert 'taskqueue_task_recoveries_total{queue="default",type="noop"} 1.0' in text
    assert (await queries.get_task(conn, claimed.task.id)).status == "pending"


DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "taskqueue-dashboard.json"
METRIC_NAME = re.compile(r"\btaskqueue_[a-z_]+\b")
DEDUP = "max without (instance, pod) ("


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL text of a Grafana dashboard: panel targets and template queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and "query" in value:
                yield str(value["query"])
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


async def _series_names(settings: Settings) -> set[str]:
    """The series names /metrics serves, also of a family with no sample yet (a counter
    nothing has counted): `_total` of a counter, `_bucket`/`_count`/`_sum` of a histogram."""
    text = await _metrics_text(settings)
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


async def test_every_grafana_query_names_a_metric_we_export(conn: Conn, settings: Settings) -> None:
    """deploy/grafana's dashboard asks only for series /metrics serves (after a run of each
    kind, so every family has samples)."""
    ensure_test_types()
    [task], _ = await transitions.enqueue(conn, [create()], settings)
    [claimed] = await transitions.claim(conn, "work", 1, worker="w", owner="w-1", lease_seconds=30)
    await transitions.fail(conn, task.id, claimed.token, "boom", settings)  # a retry
    exported = await _series_names(settings)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = list(_queries(dashboard))
    assert len(queries) >= 10
    named = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert named, queries
    assert named <= exported, sorted(named - exported)
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            # Every API instance serves the same global series: each one is taken once per
            # series before anything adds them up, or N scraped replicas count N times.
            expr = target["expr"]
            assert expr.count(DEDUP) == len(METRIC_NAME.findall(expr)), expr


async def test_a_serving_api_counts_itself_as_a_live_api_instance(
    conn: Conn, settings: Settings
) -> None:
    """taskqueue_instances{service="api"} counts live API processes by heartbeat, as the other
    services' gauges do; /api/health keeps the four services SPEC section 3 shows."""

    async def live_apis() -> int:
        return (await heartbeats.live_counts(conn, settings.dead_after_seconds))["api"]

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await wait_until(live_apis, message="the api's heartbeat")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            scraped = _samples((await client.get("/metrics")).text)
            health = (await client.get("/api/health")).json()
    assert _value(scraped["taskqueue_instances"], "taskqueue_instances", service="api") == 1
    assert set(health["services"]) == {"worker", "scheduler", "notifier", "dashboard"}
    # A clean shutdown leaves at once, as the other services do.
    assert await live_apis() == 0
    assert await conn.redis.zcard(conn.keys.heartbeats("api")) == 0
