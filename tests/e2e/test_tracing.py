"""Tracing through the `make run` topology (SPEC section 13): with OTEL_EXPORTER_OTLP_ENDPOINT
at a real OTLP/HTTP receiver, one task's spans from the api, a worker and the notifier arrive
in the caller's trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.otlp import OtlpReceiver, Span
from tests.support.stack import Stack

TRACE_ID = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN = "eee19b7ec3c1b174"
INCOMING = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[Stack]:
    running = Stack(
        tmp_path_factory.mktemp("traced"),
        WORKER_REPLICAS="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans go out at once, not every 5 s
    ).start(workers=1)
    yield running
    running.stop()


def _of_task(spans: list[Span], task_id: str) -> dict[str, Span]:
    return {s.name: s for s in spans if s.attributes.get("taskqueue.task_id") == task_id}


def test_one_tasks_spans_from_api_worker_and_notifier_share_its_trace(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    body = {"type": "sum", "payload": [1, 2], "webhook": f"{receiver.url}/done"}
    answer = stack.api.post("/api/tasks", json=body, headers={"traceparent": INCOMING})
    assert answer.status_code == 201, answer.text
    task_id = answer.json()["id"]
    stack.wait_status(task_id, "completed")

    def complete(spans: list[Span]) -> bool:
        return {"wait", "run", "notify"} <= set(_of_task(spans, task_id)) and any(
            s.name == "create" and s.trace_id == TRACE_ID for s in spans
        )

    receiver.wait_for(complete, timeout=20)
    spans = _of_task(receiver.spans, task_id)
    [create] = [s for s in receiver.named("create") if s.trace_id == TRACE_ID]
    assert (create.service, create.parent_id) == ("taskqueue-api", CALLER_SPAN)
    wait, run, notify = spans["wait"], spans["run"], spans["notify"]
    assert {wait.service, run.service} == {"taskqueue-worker"}
    assert notify.service == "taskqueue-notifier"
    for span in (wait, run, notify):
        assert (span.trace_id, span.parent_id) == (TRACE_ID, create.span_id)
    assert run.attributes["taskqueue.outcome"] == "completed"
    assert run.attributes["taskqueue.type"] == "sum"
    [headers] = [sent for path, sent in receiver.hooks if path == "/done"]
    assert headers["traceparent"] == f"00-{TRACE_ID}-{notify.span_id}-01"


def test_a_webhook_task_runs_and_delivers_in_the_notifiers_spans(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    body = {"type": "webhook", "payload": f"{receiver.url}/task"}
    answer = stack.api.post("/api/tasks", json=body, headers={"traceparent": INCOMING})
    assert answer.status_code == 201, answer.text
    task_id = answer.json()["id"]
    stack.wait_status(task_id, "completed")
    receiver.wait_for(lambda spans: {"run", "notify"} <= set(_of_task(spans, task_id)), 20)
    spans = _of_task(receiver.spans, task_id)
    run, notify = spans["run"], spans["notify"]
    assert run.service == notify.service == "taskqueue-notifier"
    assert notify.trace_id == TRACE_ID and notify.parent_id == run.span_id
