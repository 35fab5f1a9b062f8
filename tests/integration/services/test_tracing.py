"""Tracing (SPEC section 13): a create's traceparent kept with the task, and the api's and the
worker's spans exported over OTLP/HTTP to a real receiver, in the caller's trace."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared import codec, queries, tracing, transitions
from shared.consumer import Consumer
from shared.models import FINAL_STATUSES, TaskCreate
from shared.redis import Conn
from shared.registry import Handler, TaskContext
from shared.settings import Settings
from tests.support.otlp import OtlpReceiver, Span
from tests.support.seed import ensure_test_types
from tests.support.waiting import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().running() as running:
        yield running


@pytest.fixture
def traced(settings: Settings, receiver: OtlpReceiver) -> Iterator[Settings]:
    """The test's settings with OTEL_EXPORTER_OTLP_ENDPOINT at the receiver."""
    yield settings.model_copy(update={"otel_exporter_otlp_endpoint": receiver.url})
    tracing.shutdown()


async def _stored_traceparent(conn: Conn, task_id: str) -> str | None:
    return await queries.traceparent(conn, task_id)


@asynccontextmanager
async def worker(
    conn: Conn, settings: Settings, handlers: dict[str, Handler]
) -> AsyncIterator[None]:
    consumer = Consumer(
        conn,
        settings,
        service="worker",
        lane="work",
        name="Worker T",
        concurrency=4,
        lookup=handlers.get,
    )
    stop = asyncio.Event()
    job = asyncio.create_task(consumer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(job, 10)


async def _until_final(conn: Conn, *task_ids: str) -> None:
    async def final() -> bool:
        tasks = [await queries.get_task(conn, task_id) for task_id in task_ids]
        return all(task.status in FINAL_STATUSES for task in tasks)

    await wait_until(final, message="the tasks to finish")


def _one(spans: list[Span], name: str, task_id: str | None = None) -> Span:
    found = [
        span
        for span in spans
        if span.name == name
        and (task_id is None or span.attributes.get("taskqueue.task_id") == task_id)
    ]
    assert len(found) == 1, (name, task_id, spans)
    return found[0]


async def _noop(payload: Any, ctx: TaskContext) -> Any:
    if isinstance(payload, dict) and payload.get("fail"):
        raise ValueError("the handler failed on purpose")
    return payload


async def test_create_wait_and_run_join_the_callers_trace(
    conn: Conn, traced: Settings, receiver: OtlpReceiver
) -> None:
    ensure_test_types()
    header = {"traceparent": INCOMING}
    with TestClient(create_app(traced)) as client:
        fast = client.post("/api/tasks", json={"type": "noop", "payload": {"n": 1}}, headers=header)
        failing = client.post(
            "/api/tasks",
            json={"type": "noop", "payload": {"fail": True}, "max_retries": 0},
            headers={**header, "Idempotency-Key": "tracing-1"},  # the FastAPI route
        )
        batch = client.post(
            "/api/tasks/batch", json={"tasks": [{"type": "noop", "payload": 2}]}, headers=header
        )
    assert fast.status_code == failing.status_code == batch.status_code == 201
    ok_id, failed_id = fast.json()["id"], failing.json()["id"]
    batch_id = batch.json()["tasks"][0]["id"]
    creates = receiver.named("create")  # exported when the api stopped (lifespan end)
    assert len(creates) == 3
    for create in creates:
        assert (create.service, create.trace_id, create.parent_id) == (
            "taskqueue-api",
            TRACE_ID,
            CALLER_SPAN,
        )
    # Each task keeps its create span's traceparent (not the caller's).
    stored = {await _stored_traceparent(conn, task_id) for task_id in (ok_id, failed_id, batch_id)}
    assert stored == {f"00-{TRACE_ID}-{create.span_id}-01" for create in creates}

    assert tracing.setup(traced, "worker")
    async with worker(conn, traced, {"noop": _noop}):
        await _until_final(conn, ok_id, failed_id, batch_id)
    tracing.shutdown("worker")  # exports what is batched

    spans = receiver.spans
    for task_id in (ok_id, failed_id, batch_id):
        parent = (await _stored_traceparent(conn, task_id) or "").split("-")[2]
        wait, run = _one(spans, "wait", task_id), _one(spans, "run", task_id)
        for span in (wait, run):
            assert (span.service, span.trace_id, span.parent_id) == (
                "taskqueue-worker",
                TRACE_ID,
                parent,
            )
        assert wait.start_ns <= wait.end_ns <= run.start_ns <= run.end_ns
        assert run.attributes["taskqueue.queue"] == "default"
        assert run.attributes["taskqueue.type"] == "noop"
        assert run.attributes["taskqueue.attempt"] == 1
    ok, failed = _one(spans, "run", ok_id), _one(spans, "run", failed_id)
    assert ok.attributes["taskqueue.outcome"] == "completed" and ok.status_code != 2
    assert failed.attributes["taskqueue.outcome"] == "failed" and failed.status_code == 2
    assert "the handler failed on purpose" in failed.status_message
    [(event, attributes)] = failed.events
    assert event == "exception" and attributes["exception.type"] == "ValueError"
    assert "the handler failed on purpose" in attributes["exception.message"]
    created_ms = codec.to_ms((await queries.get_task(conn, ok_id)).created_at)
    assert abs(_one(spans, "wait", ok_id).start_ns // 1_000_000 - created_ms) <= 1


async def test_a_task_without_a_traceparent_runs_in_a_trace_of_its_own(
    conn: Conn, traced: Settings, receiver: OtlpReceiver
) -> None:
    ensure_test_types()
    tasks, _ = await transitions.enqueue(conn, [TaskCreate(type="noop", payload=1)], traced)
    assert await _stored_traceparent(conn, tasks[0].id) is None
    tracing.setup(traced, "worker")
    async with worker(conn, traced, {"noop": _noop}):
        await _until_final(conn, tasks[0].id)
    tracing.shutdown("worker")
    run, wait = _one(receiver.spans, "run"), _one(receiver.spans, "wait")
    assert run.parent_id == "" and (wait.trace_id, wait.parent_id) == (run.trace_id, run.span_id)


async def test_the_producer_keeps_a_traceparent_argument(conn: Conn, settings: Settings) -> None:
    from shared.producer import Producer

    ensure_test_types()
    producer = await Producer(conn, settings).start()
    try:
        task = await producer.enqueue("noop", 1, traceparent=INCOMING)
        many = await producer.enqueue_many([{"type": "noop", "payload": 2}], traceparent=INCOMING)
        keyed = await producer.enqueue("noop", 3, traceparent=INCOMING, idempotency_key="p-1")
        bad = await producer.enqueue("noop", 4, traceparent="not-a-trace")
    finally:
        await producer.aclose()
    for created in (task, many[0], keyed):
        assert await _stored_traceparent(conn, created.id) == INCOMING
    assert await _stored_traceparent(conn, bad.id) is None
    [claimed] = [
        c
        for c in await transitions.claim(conn, "work", 10, worker="W", owner="o", lease_seconds=30)
        if c.task.id == task.id
    ]
    assert claimed.traceparent == INCOMING  # with the claim's own HGETALL, no read of its own


@pytest.mark.parametrize(
    "value",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # 00 has 4 fields
        "x" * 5000,
        "",
    ],
)
async def test_a_malformed_traceparent_is_ignored_not_stored(
    conn: Conn, settings: Settings, value: str
) -> None:
    ensure_test_types()
    with TestClient(create_app(settings)) as client:
        headers = {"traceparent": value}
        answers = [
            client.post("/api/tasks", json={"type": "noop", "payload": 1}, headers=headers),
            client.post(
                "/api/tasks",
                json={"type": "noop", "payload": 1},
                headers={**headers, "Idempotency-Key": f"k-{len(value)}-{value[:2]}"},
            ),
            client.post("/api/tasks/batch", json={"tasks": [{"type": "noop", "payload": 1}]}),
        ]
    assert [answer.status_code for answer in answers] == [201, 201, 201]
    ids = [answers[0].json()["id"], answers[1].json()["id"], answers[2].json()["tasks"][0]["id"]]
    for task_id in ids:
        assert await _stored_traceparent(conn, task_id) is None


async def test_a_valid_traceparent_is_stored_as_sent_when_the_api_does_not_trace(
    conn: Conn, settings: Settings
) -> None:
    ensure_test_types()
    later_version = f"01-{TRACE_ID}-{CALLER_SPAN}-01-what-comes-next"
    with TestClient(create_app(settings)) as client:
        plain = client.post(
            "/api/tasks", json={"type": "noop", "payload": 1}, headers={"traceparent": INCOMING}
        )
        newer = client.post(
            "/api/tasks",
            json={"type": "noop", "payload": 1},
            headers={"traceparent": later_version},
        )
    assert await _stored_traceparent(conn, plain.json()["id"]) == INCOMING
    assert await _stored_traceparent(conn, newer.json()["id"]) == INCOMING  # as version 00
    assert "traceparent" not in plain.json()  # kept with the task, not part of its JSON


UNSET = textwrap.dedent(
    """
    import asyncio, sys
    from fastapi.testclient import TestClient
    from services.api.app import create_app
    from services.worker.runner import handler_for
    from shared import queries, tracing
    from shared.consumer import Consumer
    from shared.redis import create_redis
    from shared.settings import Settings
    from tests.support.seed import ensure_test_types

    settings = Settings(redis_url=sys.argv[1], allowed_hosts="testserver", _env_file=None)
    ensure_test_types()
    header = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    with TestClient(create_app(settings)) as client:
        answer = client.post("/api/tasks", json={"type": "noop", "payload": 1}, headers=header)
        assert answer.status_code == 201, answer.text
        task_id = answer.json()["id"]

    async def run() -> str:
        conn = create_redis(settings)
        consumer = Consumer(conn, settings, service="worker", lane="work", name="W",
                            concurrency=2, lookup=handler_for)
        stop = asyncio.Event()
        job = asyncio.create_task(consumer.run(stop))
        while (await queries.get_task(conn, task_id)).status != "completed":
            await asyncio.sleep(0.02)
        stop.set()
        await job
        traceparent = await queries.traceparent(conn, task_id)
        await conn.aclose()
        return traceparent

    assert asyncio.run(run()) == header["traceparent"]
    assert tracing.tracer_for("api") is None and tracing.tracer_for("worker") is None
    # FastAPI imports the OpenTelemetry API, and redis-py the SDK's metrics when installed;
    # the tracing SDK and the OTLP exporter are ours alone to import.
    ours = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.proto")
    print(sorted(name for name in sys.modules if name.startswith(ours)))
    """
)


def test_unset_no_tracing_sdk_nor_exporter_is_imported(conn: Conn, settings: Settings) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OTEL_") and name != "REDIS_URL"
    }
    done = subprocess.run(
        [sys.executable, "-c", UNSET, settings.redis_url],
        cwd=ROOT,
        env={**env, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
