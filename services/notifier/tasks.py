"""The notifier's task handlers: `email` (via smtp.py) and `webhook` (via webhooks.py)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from services.notifier import signing
from services.notifier.smtp import Mailer
from services.notifier.webhooks import Poster
from shared import codec, tracing
from shared.models import Task
from shared.registry import Handler, TaskContext
from shared.settings import Settings


class WebhookTaskFailed(Exception):
    """The target answered outside 2xx, or could not be reached."""


def build_message(payload: Any, task: Task, settings: Settings) -> EmailMessage:
    """The message for an email payload: an address (the default notice) or a full message."""
    if isinstance(payload, str):
        to = payload
        subject = f"Notification from task {task.id}"
        text = (
            f"Hello,\n\nThis is the notification sent by task {task.id} "
            f"(type {task.type}, created {task.created_at:%Y-%m-%d %H:%M:%S} UTC).\n\n"
            "-- Task Queue\n"
        )
        html = None
    else:
        to, subject, text, html = payload["to"], payload["subject"], payload["text"], None
        html = payload.get("html")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    domain = parseaddr(settings.smtp_from)[1].rpartition("@")[2] or "taskqueue.local"
    # One id per task, so a message resent after a lost attempt can be recognised.
    message["Message-ID"] = f"<task-{task.id}@{domain}>"
    message["X-Task-Id"] = task.id
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def webhook_request(payload: Any, task: Task) -> tuple[str, bytes, dict[str, str]]:
    """URL, body and extra headers of a webhook task (a URL, or {"url", "body"?, "headers"?})."""
    if isinstance(payload, str):
        return payload, codec.dumps({"task_id": task.id}).encode(), {}
    body = payload.get("body", {"task_id": task.id})
    return payload["url"], codec.dumps(body).encode(), dict(payload.get("headers", {}))


class NotifyHandlers:
    """The handlers the notifier's Consumer looks up by task type.

    `task_secrets` (WEBHOOK_TASK_SECRET) sign webhook tasks; never WEBHOOK_SECRET's keys.
    """

    def __init__(
        self, settings: Settings, mailer: Mailer, poster: Poster, task_secrets: list[bytes]
    ) -> None:
        self.settings, self.mailer, self.poster = settings, mailer, poster
        self.task_secrets = task_secrets

    TYPES = ("email", "webhook")  # what the notifier runs (SPEC section 5)

    def lookup(self, task_type: str) -> Handler | None:
        handlers: dict[str, Handler] = {"email": self.email, "webhook": self.webhook}
        return handlers.get(task_type)

    async def email(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        message = build_message(payload, ctx.task, self.settings)
        with tracing.notify_span("notifier", "email", ctx.task.id):
            reply = await self.mailer.send(message)
        return {"to": message["To"], "subject": message["Subject"], "smtp_reply": reply}

    async def webhook(self, payload: Any, ctx: TaskContext) -> dict[str, Any]:
        url, body, headers = webhook_request(payload, ctx.task)
        msg_id = f"msg_{ctx.task.id.replace('-', '')}"
        headers.update(signing.webhook_headers(self.task_secrets, msg_id, body))
        with tracing.notify_span("notifier", "webhook", ctx.task.id, url) as span:
            tracing.inject(span, headers)  # the receiver may join the trace
            result = await self.poster.post(url, body, headers)
            tracing.delivered(span, result.status_code, result.error)
        if not result.ok:
            raise WebhookTaskFailed(result.error or f"HTTP {result.status_code}")
        return {"status_code": result.status_code, "duration_ms": result.duration_ms}
