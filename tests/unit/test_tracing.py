"""shared/tracing.py without a receiver: the traceparent check, when tracing is on, and the
no-op hooks while it is off (SPEC section 13)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import tracing
from shared.settings import Settings

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    yield
    tracing.shutdown()


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (VALID, VALID),
        (f"  {VALID} ", VALID),  # optional whitespace around the value
        (VALID.encode(), VALID),  # an ASGI header
        (VALID.replace("-01", "-00"), VALID.replace("-01", "-00")),  # not sampled: kept
        ("cc" + VALID[2:] + "-later-fields", VALID),  # a later version, read as version 00
        (VALID + "-x", None),  # version 00 has exactly four fields
        ("ff" + VALID[2:], None),
        (VALID.upper(), None),
        (VALID.replace("4bf92f3577b34da6a3ce929d0e0e4736", "0" * 32), None),
        (VALID.replace("00f067aa0ba902b7", "0" * 16), None),
        (VALID[:-3], None),
        ("", None),
        (None, None),
        ("x" * 100_000, None),
    ],
)
def test_traceparent_check(value: str | bytes | None, kept: str | None) -> None:
    assert tracing.valid_traceparent(value) == kept


@pytest.mark.parametrize(
    ("values", "endpoint"),
    [
        ({}, None),
        ({"otel_exporter_otlp_endpoint": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"otel_exporter_otlp_endpoint": "http://c:4318/"}, "http://c:4318/v1/traces"),
        (
            {
                "otel_exporter_otlp_endpoint": "http://c:4318",
                "otel_exporter_otlp_traces_endpoint": "http://t:9/x",
            },
            "http://t:9/x",  # the signal's own variable wins, as written
        ),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_sdk_disabled": True}, None),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_traces_exporter": "none"}, None),
    ],
)
def test_the_standard_variables_decide_the_endpoint(
    values: dict[str, object], endpoint: str | None
) -> None:
    assert tracing.traces_endpoint(_settings(**values)) == endpoint


def test_the_variables_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-worker")
    settings = _settings()
    assert tracing.traces_endpoint(settings) == "http://collector:4318/v1/traces"
    assert settings.otel_service_name == "billing-worker"


def test_unset_every_hook_is_a_no_op() -> None:
    assert not tracing.setup(_settings(), "api")
    assert tracing.tracer_for("api") is None
    with tracing.create_span("api", VALID, "noop") as kept:
        assert kept == VALID  # the caller's own, stored as sent
    with tracing.create_span("api", "garbage", "noop") as kept:
        assert kept is None
    with tracing.create_span("api", None, "noop") as kept:
        assert kept is None
    with tracing.notify_span("notifier", "webhook", "t1", "http://x/") as span:
        assert span is None
        headers: dict[str, str] = {}
        tracing.inject(span, headers)
        tracing.delivered(span, 500, "HTTP 500")
        assert headers == {}
    tracing.record_exception(ValueError("nothing records it"))


def test_setup_and_shutdown_per_service() -> None:
    settings = _settings(otel_exporter_otlp_endpoint="http://127.0.0.1:9")
    assert tracing.setup(settings, "worker")
    worker = tracing.tracer_for("worker")
    assert worker is not None and tracing.tracer_for("api") is None
    resource = worker.provider.resource.attributes
    assert resource["service.name"] == "taskqueue-worker"
    named = settings.model_copy(update={"otel_service_name": "mine"})
    assert tracing.setup(named, "worker")  # again: replaces the first
    replaced = tracing.tracer_for("worker")
    assert replaced is not None and replaced is not worker
    assert replaced.provider.resource.attributes["service.name"] == "mine"
    tracing.shutdown("worker")
    assert tracing.tracer_for("worker") is None


def test_the_producer_default_is_the_current_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    assert tracing.current_traceparent() is None  # no span is current
    with tracer.start_as_current_span("caller") as span:
        context = span.get_span_context()
        flags = int(context.trace_flags)  # sampled, and (W3C level 2) a random trace id
        expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
        assert tracing.current_traceparent() == expected
