"""Email messages and webhook-task requests built from payloads (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notifier.tasks import build_message, webhook_request
from shared import codec
from shared.models import Task, TaskStatus
from shared.settings import Settings


def make_task(payload: object, task_type: str = "email") -> Task:
    now = datetime(2025, 12, 6, 18, 30, tzinfo=UTC)
    return Task(
        id="6f1c2d4e-0000-4000-8000-000000000001",
        type=task_type,
        payload=payload,
        status=TaskStatus.PROCESSING,
        priority=3,
        max_retries=2,
        retry_count=0,
        created_at=now,
        updated_at=now,
    )


SETTINGS = Settings(_env_file=None, smtp_from="Queue <queue@example.com>")


def test_notifier_default_message_names_the_task() -> None:
    task = make_task("ada@example.com")
    message = build_message(task.payload, task, SETTINGS)
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Queue <queue@example.com>"
    assert task.id in message["Subject"]
    body = message.get_body(("plain",))
    assert body is not None and task.id in body.get_content()
    assert message["Message-ID"] == f"<task-{task.id}@example.com>"


def test_notifier_full_message_has_text_and_html_parts() -> None:
    payload = {"to": "b@example.com", "subject": "S", "text": "T", "html": "<p>H</p>"}
    message = build_message(payload, make_task(payload), SETTINGS)
    assert message["Subject"] == "S"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "T"
    assert html is not None and html.get_content().strip() == "<p>H</p>"


def test_notifier_webhook_request_from_url_or_object() -> None:
    task = make_task("https://example.com/a", "webhook")
    url, body, headers = webhook_request(task.payload, task)
    assert (url, codec.loads(body), headers) == ("https://example.com/a", {"task_id": task.id}, {})
    payload = {"url": "https://example.com/b", "body": [1, 2], "headers": {"X-A": "1"}}
    url, body, headers = webhook_request(payload, task)
    assert (url, codec.loads(body), headers) == ("https://example.com/b", [1, 2], {"X-A": "1"})
