"""OpenTelemetry traces: the :class:`~scheduler_application.ports.tracing.Tracer` port, the
tracer provider built from ``[telemetry]``, and the official instrumentations.

Off by default (``telemetry.exporter = "none"``): then nothing here is built, no library is
instrumented, and the use cases get the no-op tracer. On, each process gets one provider whose
resource names the component (``service.name`` ``scheduler-api``, ``scheduler-dispatcher``,
``scheduler-worker``, or ``scheduler`` for a combined process), and SQLAlchemy, redis,
aio-pika and httpx are instrumented, so their client spans nest under the use cases' spans.

Client spans with no parent — the statements of the dispatcher's periodic loops, a worker's
heartbeat — are not sampled: they would each start a trace of their own and bury the traces
that matter, one per run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes as OtelAttributes
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.ports.redaction import Redactor
from scheduler_application.ports.tracing import (
    NO_TRACER,
    Attributes,
    AttributeValue,
    Span,
    SpanKind,
    Tracer,
)
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.telemetry.redaction import SecretRedactor

logger = logging.getLogger("scheduler.tracing")

SOFTWARE_VERSION = "0.1.0"
_KINDS = {
    SpanKind.INTERNAL: trace.SpanKind.INTERNAL,
    SpanKind.PRODUCER: trace.SpanKind.PRODUCER,
    SpanKind.CONSUMER: trace.SpanKind.CONSUMER,
}
_PROPAGATOR = TraceContextTextMapPropagator()


def _context_of(traceparent: str) -> otel_context.Context:
    """The context a ``traceparent`` names (empty, so a new trace, when it is malformed)."""
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=otel_context.Context())


def _traceparent_of(span: trace.Span) -> str | None:
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def traceparent(self) -> str | None:
        return _traceparent_of(self._span)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def set_error(self, description: str) -> None:
        self._span.set_status(trace.Status(trace.StatusCode.ERROR, description))


class OpenTelemetryTracer:
    """The ``Tracer`` port on an OpenTelemetry ``TracerProvider``."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("scheduler", SOFTWARE_VERSION)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        root: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes | None = None,
        links: Sequence[str] = (),
    ) -> Iterator[Span]:
        if parent is not None:
            context: otel_context.Context | None = _context_of(parent)
        elif root:
            context = otel_context.Context()
        else:
            context = None  # the current one
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes=dict(attributes) if attributes else None,
            links=_links(links),
        ) as span:
            yield _OtelSpan(span)

    def current_traceparent(self) -> str | None:
        return _traceparent_of(trace.get_current_span())

    def start_trace(
        self, name: str, *, attributes: Attributes | None = None, links: Sequence[str] = ()
    ) -> str | None:
        span = self._tracer.start_span(
            name,
            context=otel_context.Context(),
            attributes=dict(attributes) if attributes else None,
            links=_links(links),
        )
        span.end()
        return _traceparent_of(span)


def _links(traceparents: Sequence[str]) -> list[trace.Link]:
    found = []
    for traceparent in traceparents:
        span_context = trace.get_current_span(_context_of(traceparent)).get_span_context()
        if span_context.is_valid:
            found.append(trace.Link(span_context))
    return found


class DropOrphanClientSpans(Sampler):
    """Root sampler: a client span (a SQL statement, a Redis command…) that starts a trace
    is dropped; any other root span is sampled at ``ratio``. Children follow their parent
    (wrapped in :class:`ParentBased`)."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: OtelAttributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind is trace.SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"DropOrphanClientSpans({self._ratio.get_description()})"


class RedactingSpanProcessor(SpanProcessor):
    """Hands ``inner`` a copy of each finished span with every string it carries — name,
    attributes, event attributes, status description — passed through the redactor, so that
    no secret leaves the process in a trace (an ``http`` task's URL with a token in its query,
    an exception message quoting a password)."""

    def __init__(self, inner: SpanProcessor, redactor: Redactor) -> None:
        self._inner = inner
        self._redact = redactor.redact

    def on_start(
        self, span: trace.Span, parent_context: otel_context.Context | None = None
    ) -> None:
        # The SDK hands its own spans to processors; the API type is what the protocol names.
        self._inner.on_start(span, parent_context)  # type: ignore[arg-type]

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(self._redacted(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def _redacted(self, span: ReadableSpan) -> ReadableSpan:
        status = span.status
        if status.description:
            status = trace.Status(status.status_code, self._redact(status.description))
        return ReadableSpan(
            name=self._redact(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self._attributes(span.attributes),
            events=[
                Event(event.name, self._attributes(event.attributes), event.timestamp)
                for event in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _attributes(self, attributes: OtelAttributes) -> dict[str, Any]:
        redacted: dict[str, Any] = {}
        for key, value in (attributes or {}).items():
            if isinstance(value, str):
                redacted[key] = self._redact(value)
            elif isinstance(value, tuple | list) and any(isinstance(v, str) for v in value):
                redacted[key] = tuple(self._redact(v) if isinstance(v, str) else v for v in value)
            else:
                redacted[key] = value
        return redacted


def service_name(components: Sequence[str]) -> str:
    """``scheduler-<component>`` for one component, ``scheduler`` for a combined process."""
    return f"scheduler-{components[0]}" if len(components) == 1 else "scheduler"


def build_tracer_provider(
    settings: Settings,
    *,
    components: Sequence[str],
    exporter: SpanExporter | None = None,
    processor: SpanProcessor | None = None,
    redactor: Redactor | None = None,
) -> TracerProvider | None:
    """The process's provider, or None when tracing is off. ``exporter``/``processor``
    replace the configured exporter (tests pass an in-memory one); either way every span is
    redacted (``redactor``, by default the same rules as the logs) before it is exported."""
    config = settings.telemetry
    if config.exporter == "none" and exporter is None and processor is None:
        return None
    attributes: dict[str, Any] = {
        "service.name": service_name(components),
        "service.namespace": config.service_namespace,
        "service.version": SOFTWARE_VERSION,
        "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "scheduler.components": ",".join(components),
    }
    attributes.update(parse_resource_attributes(config.resource_attributes))
    provider = TracerProvider(
        resource=Resource.create(attributes),
        sampler=ParentBased(root=DropOrphanClientSpans(config.sample_ratio)),
    )
    if processor is None:
        processor = BatchSpanProcessor(exporter or _configured_exporter(settings))
    provider.add_span_processor(
        RedactingSpanProcessor(processor, redactor or SecretRedactor.from_settings(settings))
    )
    return provider


def parse_resource_attributes(entries: Sequence[str]) -> dict[str, str]:
    """``key=value`` entries of ``telemetry.resource_attributes`` (validated by the loader)."""
    pairs = (entry.partition("=") for entry in entries)
    return {key.strip(): value.strip() for key, sep, value in pairs if sep and key.strip()}


def _configured_exporter(settings: Settings) -> SpanExporter:
    config = settings.telemetry
    if config.exporter == "console":
        return ConsoleSpanExporter()
    if config.exporter == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.otlp_endpoint)
    if config.exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        endpoint = config.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        return HttpExporter(endpoint=endpoint)
    raise ConfigError("telemetry.exporter", f"unknown exporter {config.exporter!r}")


@dataclass
class Tracing:
    """What tracing is for one process: the port the use cases get, and the provider (None
    when off) that the API's Litestar plugin and the instrumentations report to."""

    tracer: Tracer = NO_TRACER
    provider: TracerProvider | None = None
    _instrumentors: list[Any] = field(default_factory=list)

    def instrument(self, engine: AsyncEngine) -> None:
        """Instrument SQLAlchemy (this engine), redis, aio-pika and httpx."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        instrumentors: Mapping[str, tuple[Any, dict[str, Any]]] = {
            # Its declared range stops below SQLAlchemy 2.1, which it handles: it only listens
            # to the engine's cursor events, which 2.1 keeps.
            "sqlalchemy": (
                SQLAlchemyInstrumentor(),
                {"engine": engine.sync_engine, "enable_commenter": False, "skip_dep_check": True},
            ),
            "redis": (RedisInstrumentor(), {}),
            "aio-pika": (AioPikaInstrumentor(), {}),
            "httpx": (HTTPXClientInstrumentor(), {}),
        }
        for name, (instrumentor, options) in instrumentors.items():
            # Process-wide: in a combined process (or a test) the first provider keeps them.
            if instrumentor.is_instrumented_by_opentelemetry:
                logger.debug("%s is already instrumented in this process", name)
                continue
            instrumentor.instrument(tracer_provider=self.provider, **options)
            self._instrumentors.append(instrumentor)

    async def aclose(self) -> None:
        """Undo the instrumentation and flush what is still buffered."""
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self._instrumentors.clear()
        if self.provider is not None:
            self.provider.shutdown()


def build_tracing(
    settings: Settings,
    *,
    components: Sequence[str],
    processor: SpanProcessor | None = None,
    redactor: Redactor | None = None,
) -> Tracing:
    provider = build_tracer_provider(
        settings, components=components, processor=processor, redactor=redactor
    )
    if provider is None:
        return Tracing()
    return Tracing(tracer=OpenTelemetryTracer(provider), provider=provider)


def name_request_span(method: str, route: str) -> None:
    """Rename the current (server) span after routing: ``POST /api/v1/tasks/{task_id}/
    trigger`` rather than the raw path, whose ids would make every span name unique."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
