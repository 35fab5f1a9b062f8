"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature headers).

The signatures come from the `standardwebhooks` reference package. Secrets are decoded here,
not by it: it pads and decodes leniently, so a mistyped secret would sign with a wrong key
instead of failing at start.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from shared.settings import Settings

SECRET_PREFIX = "whsec_"


def parse_secrets(raw: str, *, name: str = "WEBHOOK_SECRET") -> list[bytes]:
    """Decode a secret setting (`name`): one `whsec_<base64>` secret, or several separated by
    spaces or commas while a secret is rotated (each signs, so receivers accept either).
    Empty: unsigned.

    Raises ValueError for a secret that is not base64 (or is empty), so a typo fails at start,
    not silently.
    """
    secrets = []
    for part in raw.replace(",", " ").split():
        try:
            key = base64.b64decode(part.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ValueError(
                f"{name} must be 'whsec_' followed by base64 (Standard Webhooks format)"
            )
        secrets.append(key)
    return secrets


def secrets_from(settings: Settings) -> tuple[list[bytes], list[bytes]]:
    """The keys of completion webhooks (WEBHOOK_SECRET) and of webhook tasks
    (WEBHOOK_TASK_SECRET), kept apart: a webhook task's body is chosen by whoever creates
    the task, so a key that signs both would sign forged completion webhooks on request.

    Raises ValueError for a malformed secret, or one key in both settings.
    """
    completion = parse_secrets(settings.webhook_secret)
    tasks = parse_secrets(settings.webhook_task_secret, name="WEBHOOK_TASK_SECRET")
    if set(completion) & set(tasks):
        raise ValueError("WEBHOOK_TASK_SECRET must not share a key with WEBHOOK_SECRET")
    return completion, tasks


def signature(secrets: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value: `v1,<base64 HMAC-SHA256>` per secret, space separated.
    `body` is UTF-8 (it is always JSON text), so its text signs the same bytes."""
    at, text = datetime.fromtimestamp(timestamp, UTC), body.decode()
    return " ".join(Webhook(key).sign(msg_id, at, text) for key in secrets)


def webhook_headers(
    secrets: list[bytes], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Headers for one attempt: the id stays the same across retries, the timestamp is fresh."""
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp)}
    if secrets:
        headers["webhook-signature"] = signature(secrets, msg_id, stamp, body)
    return headers
