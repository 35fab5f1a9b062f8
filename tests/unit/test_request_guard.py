"""The request guard's decisions on header values alone (no app, no I/O)."""

from __future__ import annotations

import pytest

from shared.request_guard import RequestGuard, binds_loopback, split_host
from shared.settings import Settings


def guard(**overrides: object) -> RequestGuard:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    return RequestGuard(app, Settings(_env_file=None, **overrides))  # type: ignore[arg-type]


def refused(g: RequestGuard, method: str = "POST", **headers: str) -> bool:
    encoded = {name.replace("_", "-").encode(): value for name, value in headers.items()}
    return g.refusal(method, encoded) is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM:8080", ("example.com", 8080)),
        ("[::1]:8081", ("::1", 8081)),
        ("[::1]", ("::1", None)),
        ("localhost.", ("localhost", None)),
        ("a:b:c", ("a:b:c", None)),
        ("host:port", ("host:port", None)),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None]) -> None:
    assert split_host(value) == expected


def test_loopback_binds() -> None:
    assert all(binds_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"))
    assert not any(binds_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com"))


def test_origin_ports_follow_the_scheme_defaults() -> None:
    g = guard(bind_host="0.0.0.0")
    assert not refused(g, host="tasks.example", origin="https://tasks.example")
    assert not refused(g, host="tasks.example", origin="https://tasks.example:443")
    assert not refused(g, host="tasks.example:443", origin="https://tasks.example")
    assert refused(g, host="tasks.example", origin="http://tasks.example:8080")
    assert refused(g, host="tasks.example:8080", origin="http://tasks.example")
    assert refused(g, host="tasks.example", origin="ftp://tasks.example")
    assert refused(g, host="tasks.example", origin="http://tasks.example:99999")


def test_reads_pass_cross_site_but_not_an_unknown_host_on_loopback() -> None:
    g = guard()
    for method in ("GET", "HEAD", "OPTIONS"):
        assert not refused(g, method, host="127.0.0.1", origin="http://evil.example")
        assert refused(g, method, host="evil.example")
    assert not refused(g, host="127.0.0.1")  # no Origin: not a browser
    assert not refused(g)  # no Host at all (HTTP/1.0): no browser sends that
