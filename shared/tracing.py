"""OpenTelemetry traces (SPEC section 13): a create's W3C `traceparent` kept with its tasks, and
the spans `create` (api), `wait` and `run` (worker, notifier) and `notify` (notifier) that join
its trace, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces one) is set.

Off by default, and then free: this module imports nothing of OpenTelemetry (neither the SDK
nor the exporter), no span is made, and each hook below costs one dict lookup. `setup` turns
one service on (the optional `otel` extra); the other OTEL_* variables (headers, sampler,
batch delays, resource attributes) are read by the SDK itself. The traceparent stored is the
`create` span's when the api traces, else the caller's own, so the worker's spans are
children of the create either way.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from shared.settings import Settings
from shared.traceparent import valid_traceparent

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from shared.transitions import Claimed, Outcome

logger = logging.getLogger(__name__)

# W3C Trace Context: version-traceid-parentid-flags; a later version may append fields.
_NO_SPAN: AbstractContextManager[Any] = nullcontext()
EXPORT_ON_EXIT_SECONDS = 3.0


class Tracing:
    """One service's tracer provider (its own resource, batch processor and exporter)."""

    def __init__(self, provider: TracerProvider, service: str) -> None:
        self.provider, self.service = provider, service
        self.tracer: Tracer = provider.get_tracer("taskqueue")

    @contextlib.contextmanager
    def create_span(self, incoming: str | None, task_type: str, count: int) -> Iterator[str | None]:
        """The api's `create` span (child of the caller's traceparent); yields its traceparent,
        which the tasks store."""
        attributes: dict[str, Any] = {"taskqueue.type": task_type, "taskqueue.tasks": count}
        parent = _context(incoming)
        with self.tracer.start_as_current_span(
            "create", context=parent, kind=_kind("PRODUCER"), attributes=attributes
        ) as span:
            yield _format(span) or incoming

    async def run(self, item: Claimed, outcome: Awaitable[Outcome]) -> Outcome:
        """Await a claimed task's `outcome` inside its `run` span, after recording its `wait`
        (created or due -> now) with explicit times."""
        from opentelemetry.trace import Status, StatusCode

        task = item.task
        started = time.time_ns()
        attributes: dict[str, Any] = {
            "taskqueue.task_id": task.id,
            "taskqueue.queue": task.queue,
            "taskqueue.type": task.type,
            "taskqueue.attempt": item.attempt,
        }
        parent = _context(item.traceparent)
        run = self.tracer.start_span(
            "run", context=parent, kind=_kind("CONSUMER"), attributes=attributes, start_time=started
        )
        if parent is None:  # a task created without a trace: its run is the root of a new one
            from opentelemetry.trace import set_span_in_context

            parent = set_span_in_context(run)
        waited_from = min(_wait_start_ms(item) * 1_000_000, started)
        self.tracer.start_span(
            "wait", context=parent, attributes=attributes, start_time=waited_from
        ).end(end_time=started)
        from opentelemetry.trace import use_span

        with use_span(run, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                result = await outcome
            except BaseException:
                run.set_attribute("taskqueue.outcome", "interrupted")  # shutdown hands it back
                raise
            name = "completed" if result.ok else "cancelled" if result.cancelled else "failed"
            run.set_attribute("taskqueue.outcome", name)
            if not result.ok:
                run.set_status(Status(StatusCode.ERROR, result.error[:500]))
            return result

    def notify_span(
        self, kind: str, task_id: str, url: str | None, parent: str | None
    ) -> AbstractContextManager[Span]:
        """A `notify` span: one webhook or email delivery; `parent` (a task's traceparent)
        when the span is not a child of the current one (a completion webhook)."""
        from urllib.parse import urlsplit

        attributes: dict[str, Any] = {"taskqueue.notify": kind, "taskqueue.task_id": task_id}
        if url:  # the host only: a URL's path or query may hold a token
            attributes["server.address"] = urlsplit(url).hostname or ""
        return self.tracer.start_as_current_span(
            "notify", context=_context(parent), kind=_kind("CLIENT"), attributes=attributes
        )

    def shutdown(self) -> None:
        """Export what is still batched, waiting EXPORT_ON_EXIT_SECONDS at most: a collector
        that does not answer must not hold a service's exit past its grace period."""
        exporting = threading.Thread(target=self.provider.shutdown, daemon=True)
        exporting.start()
        exporting.join(EXPORT_ON_EXIT_SECONDS)


# service -> its Tracing; empty while tracing is off (every hook's fast path).
_services: dict[str, Tracing] = {}


def traces_endpoint(settings: Settings) -> str | None:
    """The OTLP/HTTP traces URL the settings name, or None: tracing is off."""
    if settings.otel_sdk_disabled or settings.otel_traces_exporter.strip().lower() == "none":
        return None
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def setup(settings: Settings, service: str) -> bool:
    """Export `service`'s spans when an OTLP endpoint is set; False (and nothing imported)
    when none is, or when the `otel` extra is not installed (said once in the log).

    Service name: OTEL_SERVICE_NAME, else taskqueue-<service>. Tests call it per test with
    their own settings; a service set up again replaces its provider."""
    endpoint = traces_endpoint(settings)
    if endpoint is None:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        logger.warning("%s: an OTLP endpoint is set, but not taskqueue[otel]: %s", service, exc)
        return False
    name = settings.otel_service_name or f"taskqueue-{service}"
    resource = Resource.create({"service.name": name})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # ours to shut down
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    shutdown(service)
    # Not made the process-wide provider: that stays the application's (a handler's own
    # spans still nest under `run`, the current span, with whatever provider it set).
    _services[service] = Tracing(provider, service)
    logger.info("%s exports traces to %s as %s", service, endpoint, name)
    return True


def shutdown(service: str | None = None) -> None:
    """Export what is batched and stop tracing `service` (None: every service)."""
    for name in [service] if service else list(_services):
        tracing = _services.pop(name, None)
        if tracing is not None:
            tracing.shutdown()


@contextlib.contextmanager
def configured(settings: Settings, service: str) -> Iterator[Tracing | None]:
    """`setup` for the length of a service's run, exporting what is left when it ends."""
    setup(settings, service)
    try:
        yield _services.get(service)
    finally:
        shutdown(service)


def tracer_for(service: str) -> Tracing | None:
    """The service's Tracing, or None while it does not trace (the fast path)."""
    return _services.get(service) if _services else None


def create_span(
    service: str, incoming: str | bytes | None, task_type: str, count: int = 1
) -> AbstractContextManager[str | None]:
    """Around a create: yields the traceparent its tasks store (None: none). Tracing off,
    that is the caller's own header when it is valid, and no span is made."""
    tracing = _services.get(service) if _services else None
    if tracing is None:
        return nullcontext(valid_traceparent(incoming)) if incoming else _NO_SPAN
    return tracing.create_span(valid_traceparent(incoming), task_type, count)


def notify_span(
    service: str, kind: str, task_id: str, url: str | None = None, parent: str | None = None
) -> AbstractContextManager[Span | None]:
    """Around one delivery (kind "webhook" or "email"): a `notify` span, or nothing."""
    tracing = _services.get(service) if _services else None
    if tracing is None:
        return _NO_SPAN
    return tracing.notify_span(kind, task_id, url, parent)


def delivered(span: Span | None, status_code: int | None, error: str | None) -> None:
    """What a delivery came to, on its `notify` span (nothing without one)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if error:
        span.set_status(Status(StatusCode.ERROR, error[:500]))


def inject(span: Span | None, headers: dict[str, str]) -> None:
    """Add the span's traceparent to an outgoing request's headers (nothing without one)."""
    traceparent = _format(span) if span is not None else None
    if traceparent:
        headers["traceparent"] = traceparent


def record_exception(exc: BaseException) -> None:
    """Record a handler's exception on the current span (the `run` span) when tracing."""
    if not _services:
        return
    from opentelemetry.trace import get_current_span

    get_current_span().record_exception(exc)


def current_traceparent() -> str | None:
    """The traceparent of the caller's current OpenTelemetry span (the producer's default),
    or None; an application that never imported OpenTelemetry pays one dict lookup."""
    global _current_span
    if _current_span is None:
        if "opentelemetry.trace" not in sys.modules:
            return None
        from opentelemetry.trace import get_current_span

        _current_span = get_current_span
    return _format(_current_span())


_current_span: Callable[[], Span] | None = None  # opentelemetry.trace's, once imported


def _format(span: Span | None) -> str | None:
    context = span.get_span_context() if span is not None else None
    if context is None or not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _context(traceparent: str | None) -> Context | None:
    """An OpenTelemetry context whose remote parent is `traceparent` (None: a new trace)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[name]


def _wait_start_ms(item: Claimed) -> int:
    """When the claimed run's wait began: its retry's due time (the `due` field), else its
    scheduled time, else its creation."""
    if item.due and item.due.isdigit():
        return int(item.due)
    task = item.task
    moment = task.created_at
    if task.scheduled_for is not None and task.scheduled_for > moment:
        moment = task.scheduled_for
    return int(moment.timestamp() * 1000)
