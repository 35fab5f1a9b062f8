"""The notifier's deliveries as `notify` spans in the task's trace (SPEC section 13), exported
over OTLP/HTTP to a real receiver, which also takes the webhooks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import plugins, tracing, transitions
from shared.models import TaskCreate, TaskStatus
from shared.redis import Conn
from shared.settings import Settings
from tests.integration.notifier.helpers import StartNotifier, wait_final
from tests.support.otlp import OtlpReceiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
INCOMING = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().running() as running:
        yield running


@pytest.fixture
def traced(settings: Settings, receiver: OtlpReceiver) -> Iterator[Settings]:
    yield settings.model_copy(update={"otel_exporter_otlp_endpoint": receiver.url})
    tracing.shutdown()


async def test_a_webhook_task_and_a_completion_webhook_are_notify_spans_of_their_trace(
    conn: Conn, traced: Settings, receiver: OtlpReceiver, start_notifier: StartNotifier
) -> None:
    plugins.load_task_modules(traced)
    hook = f"{receiver.url}/hook"
    creates = [
        TaskCreate(type="webhook", payload=f"{receiver.url}/task", max_retries=0),
        TaskCreate(type="image", payload={"n": 1}, webhook=hook),
    ]
    (task, done), _ = await transitions.enqueue(conn, creates, traced, traceparent=INCOMING)
    assert tracing.setup(traced, "notifier")
    await start_notifier(traced)
    assert (await wait_final(conn, task.id)).status == TaskStatus.COMPLETED
    # The image task is ended by hand, as a worker would: its webhook goes out on completion.
    [claimed] = await transitions.claim(
        conn, "work", 1, worker="Test worker", owner="test-owner", lease_seconds=30
    )
    assert claimed.traceparent == INCOMING
    await transitions.complete(conn, done.id, claimed.token, {"ok": 1}, traced)
    await receiver.until(lambda r: any(path == "/hook" for path, _ in r.hooks))
    tracing.shutdown("notifier")  # exports what is batched

    notify = {span.attributes["taskqueue.task_id"]: span for span in receiver.named("notify")}
    assert set(notify) == {task.id, done.id}
    [run] = [s for s in receiver.named("run") if s.attributes["taskqueue.task_id"] == task.id]
    assert (run.service, run.trace_id, run.parent_id) == (
        "taskqueue-notifier",
        TRACE_ID,
        CALLER_SPAN,
    )
    task_notify, completion = notify[task.id], notify[done.id]
    # A webhook task's delivery is a child of its run; a completion webhook's, of the create.
    assert (task_notify.trace_id, task_notify.parent_id) == (TRACE_ID, run.span_id)
    assert (completion.trace_id, completion.parent_id) == (TRACE_ID, CALLER_SPAN)
    for span in (task_notify, completion):
        assert span.service == "taskqueue-notifier"
        assert span.attributes["taskqueue.notify"] == "webhook"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["http.response.status_code"] == 204
    # Each request carried its notify span's traceparent, so the receiver may join the trace.
    sent = {path: headers["traceparent"] for path, headers in receiver.hooks}
    assert sent["/task"] == f"00-{TRACE_ID}-{task_notify.span_id}-01"
    assert sent["/hook"] == f"00-{TRACE_ID}-{completion.span_id}-01"


async def test_a_notifier_that_does_not_trace_sends_no_traceparent(
    conn: Conn, settings: Settings, receiver: OtlpReceiver, start_notifier: StartNotifier
) -> None:
    plugins.load_task_modules(settings)
    [task], _ = await transitions.enqueue(
        conn,
        [TaskCreate(type="webhook", payload=f"{receiver.url}/task")],
        settings,
        traceparent=INCOMING,
    )
    await start_notifier(settings)
    assert (await wait_final(conn, task.id)).status == TaskStatus.COMPLETED
    [(path, headers)] = receiver.hooks
    assert path == "/task"
    assert "traceparent" not in headers and receiver.requests == 0
