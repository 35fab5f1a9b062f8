"""Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature headers)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from shared.settings import Settings

SECRET_PREFIX = "whsec_"


def parse_secrets(raw: str, *, name: str = "WEBHOOK_SECRET") -> list[bytes]:
    """Decode a secret setting (`name`): one `whsec_<base64>` secret, or several separated by
    spaces or commas while a secret is rotated (each signs, so receivers accept either).
    Empty: unsigned.

    Raises ValueError for a secret that is not base64, so a typo fails at start, not silently.
    """
    secrets = []
    for part in raw.replace(",", " ").split():
        encoded = part.removeprefix(SECRET_PREFIX)
        try:
            secrets.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(
                f"{name} must be 'whsec_' followed by base64 (Standard Webhooks format)"
            ) from exc
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
    """The webhook-signature value: `v1,<base64 HMAC-SHA256>` per secret, space separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in secrets
    )


def webhook_headers(
    secrets: list[bytes], msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Headers for one attempt: the id stays the same across retries, the timestamp is fresh."""
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp)}
    if secrets:
        headers["webhook-signature"] = signature(secrets, msg_id, stamp, body)
    return headers
