"""The built-in task types: `image` (a simulated demo job), `email` and `webhook`.

Email and webhook tasks run in the notifier (lane "notify"), the only service that speaks SMTP
and HTTP; this module only validates their payloads so the API can refuse bad ones early.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from typing import Any

from shared.errors import ValidationFailed
from shared.keys import Lane
from shared.netguard import check_webhook_url
from shared.registry import TaskContext, TaskType, register
from shared.settings import Settings

_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")  # fullmatch: "$" allows a final \n
# RFC 9110 token: what an HTTP field name may be made of.
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# The notifier frames the body itself: a caller's value would contradict it.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})


def _details(field: str, message: str) -> list[dict[str, Any]]:
    return [{"loc": ["body", "payload", *([field] if field else [])], "msg": message}]


def _breaks_header(value: str, *, tab: bool = False) -> bool:
    """True when `value` holds a control character (CR and LF among them) or a line or
    paragraph separator: in a header it would end the line or fail at send time."""
    return any(
        (unicodedata.category(char) == "Cc" and not (tab and char == "\t"))
        or char in "\u2028\u2029"
        for char in value
    )


def _check_address(address: str, field: str) -> None:
    if not _ADDRESS.fullmatch(address) or _breaks_header(address):
        where = f"email {field!r}" if field else "email payload"
        raise ValidationFailed(
            f"{where} is not an email address", _details(field, "not an address")
        )


def validate_email(payload: Any, settings: Settings) -> None:
    """An address string, or {"to", "subject", "text", "html"?} with string values."""
    if isinstance(payload, str):
        _check_address(payload, "")
        return
    if not isinstance(payload, dict):
        raise ValidationFailed(
            'email payload must be an address or {"to", "subject", "text", "html"?}',
            _details("", "wrong type"),
        )
    unknown = set(payload) - {"to", "subject", "text", "html"}
    if unknown:
        raise ValidationFailed(f"unknown email fields: {sorted(unknown)}", _details("", "extra"))
    for field in ("to", "subject", "text"):
        if not isinstance(payload.get(field), str) or not payload[field]:
            raise ValidationFailed(
                f"email payload needs a string {field!r}", _details(field, "missing")
            )
    if "html" in payload and not isinstance(payload["html"], str):
        raise ValidationFailed("email 'html' must be a string", _details("html", "wrong type"))
    _check_address(payload["to"], "to")
    if _breaks_header(payload["subject"]):
        raise ValidationFailed(
            "email 'subject' must be one line without control characters",
            _details("subject", "control character"),
        )


def validate_webhook(payload: Any, settings: Settings) -> None:
    """A URL string, or {"url", "body"?, "headers"?}."""
    if isinstance(payload, str):
        url = payload
    elif isinstance(payload, dict) and isinstance(payload.get("url"), str):
        unknown = set(payload) - {"url", "body", "headers"}
        if unknown:
            raise ValidationFailed(
                f"unknown webhook fields: {sorted(unknown)}", _details("", "extra")
            )
        _check_headers(payload.get("headers", {}))
        url = payload["url"]
    else:
        raise ValidationFailed(
            'webhook payload must be a URL or {"url", "body"?, "headers"?}',
            _details("", "wrong type"),
        )
    check_webhook_url(url, allow_private=settings.webhook_allow_private_networks)


def _check_headers(headers: Any) -> None:
    """Extra webhook headers: names are HTTP tokens, values printable ASCII (a tab allowed)."""
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValidationFailed(
            "webhook 'headers' must map strings to strings", _details("headers", "wrong type")
        )
    for name, value in headers.items():
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _FRAMING_HEADERS:
            raise ValidationFailed(
                f"webhook header name {name!r} is not allowed (an HTTP token, and not "
                "Content-Length or Transfer-Encoding)",
                _details("headers", "bad header name"),
            )
        if not value.isascii() or _breaks_header(value, tab=True):
            raise ValidationFailed(
                f"webhook header {name!r} must be ASCII without control characters",
                _details("headers", "bad header value"),
            )


IMAGE_STEPS = ("decoding", "resizing", "filtering", "encoding", "saving")


async def simulate_image(payload: Any, ctx: TaskContext) -> dict[str, Any]:
    """Demo work, as in the seed: waits IMAGE_TASK_SECONDS and reports what it 'processed'.

    It reports its progress at each of its steps (SPEC section 10: at least 4 times), and
    a cancel interrupts it at once (it is async: the worker cancels its sleep)."""
    seconds = ctx.settings.image_task_seconds
    for done, step in enumerate(IMAGE_STEPS):
        await ctx.progress(100 * done / len(IMAGE_STEPS), step)
        await asyncio.sleep(seconds / len(IMAGE_STEPS))
    await ctx.progress(100, "done")
    return {"processed": payload, "seconds": seconds}


register(TaskType("image", handler=simulate_image, description="simulated image processing (demo)"))
register(TaskType("email", lane=Lane.NOTIFY, validate=validate_email, description="send an email"))
register(
    TaskType("webhook", lane=Lane.NOTIFY, validate=validate_webhook, description="POST to a URL")
)
