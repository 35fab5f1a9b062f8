"""Header fields of email and webhook tasks: a CR, LF or any control character (and anything
else that cannot be sent) is a 400 at creation, on both create paths, with nothing written;
before, such a task was accepted and failed at send time, retried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.redis import Conn
from shared.settings import Settings
from tests.support.seed import ensure_test_types

MAIL = {"to": "user@example.com", "subject": "Hello", "text": "Body"}
HOOK = "https://example.com/hook"
CONTROL = ["\r\n", "\n", "\r", "\x00", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\t"]

BAD_PAYLOADS: list[tuple[str, str, Any]] = [
    *(
        ("email", f"subject {c!r}", {**MAIL, "subject": f"Hi{c}Bcc: x@evil.example"})
        for c in CONTROL
    ),
    *(("email", f"to {c!r}", {**MAIL, "to": f"user@example.com{c}"}) for c in CONTROL),
    ("email", "to NUL inside", {**MAIL, "to": "us\x00er@example.com"}),
    ("email", "address string NUL", "user\x00@example.com"),
    ("email", "address string DEL", "user@example.com\x7f"),
    *(
        ("webhook", f"header value {c!r}", {"url": HOOK, "headers": {"X-A": f"v{c}X-B: 1"}})
        for c in CONTROL
        if c != "\t"  # a tab is allowed inside a field value (RFC 9110)
    ),
    ("webhook", "header name CRLF", {"url": HOOK, "headers": {"X-A\r\nX-B": "v"}}),
    ("webhook", "header name space", {"url": HOOK, "headers": {"X A": "v"}}),
    ("webhook", "header name colon", {"url": HOOK, "headers": {"X:A": "v"}}),
    ("webhook", "header name empty", {"url": HOOK, "headers": {"": "v"}}),
    ("webhook", "header value not ASCII", {"url": HOOK, "headers": {"X-A": "caf\u00e9"}}),
    ("webhook", "header Content-Length", {"url": HOOK, "headers": {"Content-Length": "1"}}),
    ("webhook", "header Transfer-Encoding", {"url": HOOK, "headers": {"transfer-encoding": "x"}}),
]


@pytest.fixture
def api(settings: Settings, conn: Conn) -> Iterator[TestClient]:
    ensure_test_types()
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


@pytest.mark.parametrize(
    ("kind", "case", "payload"), BAD_PAYLOADS, ids=[c for _, c, _ in BAD_PAYLOADS]
)
async def test_unsendable_header_fields_are_400_on_both_paths(
    api: TestClient, conn: Conn, kind: str, case: str, payload: Any
) -> None:
    for headers in ({}, {"Idempotency-Key": "h-1"}):  # the fast path, then the route
        reply = api.post("/api/tasks", json={"type": kind, "payload": payload}, headers=headers)
        assert reply.status_code == 400, (case, headers, reply.text)
        body = reply.json()
        assert body["error"] and body["details"], body
    batch = api.post("/api/tasks/batch", json={"tasks": [{"type": kind, "payload": payload}]})
    assert batch.status_code == 400, batch.text
    assert await conn.redis.hgetall(conn.keys.counts) == {}
    assert await conn.redis.zcard(conn.keys.index_all) == 0


def test_line_breaks_in_bodies_and_ordinary_headers_are_fine(api: TestClient) -> None:
    mail = {**MAIL, "subject": "Caf\u00e9 \u2603 report", "text": "a\r\nb\n", "html": "<p>\n</p>"}
    hook = {
        "url": HOOK,
        "body": {"t": "a\r\n"},
        "headers": {"X-Trace": "a\tb", "Host": "x.example"},
    }
    for kind, payload in (("email", mail), ("webhook", hook)):
        reply = api.post("/api/tasks", json={"type": kind, "payload": payload})
        assert reply.status_code == 201, reply.text
