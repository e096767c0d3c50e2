"""The OpenTelemetry adapter: configuration, the provider per component, sampling, and the
``traceparent`` strings that carry a run's trace between processes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scheduler_application.ports.tracing import NO_TRACER, SpanKind
from scheduler_infrastructure.config import Settings, TelemetrySettings, load_settings
from scheduler_infrastructure.errors import ConfigError
from scheduler_infrastructure.telemetry.tracing import (
    OpenTelemetryTracer,
    build_tracer_provider,
    build_tracing,
    service_name,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> OpenTelemetryTracer:
    provider = build_tracer_provider(
        Settings(), components=["worker"], processor=SimpleSpanProcessor(exporter)
    )
    assert provider is not None
    return OpenTelemetryTracer(provider)


def test_tracing_is_off_by_default_and_costs_nothing() -> None:
    tracing = build_tracing(Settings(), components=["api"])
    assert tracing.provider is None
    assert tracing.tracer is NO_TRACER


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SCHEDULER__TELEMETRY__SAMPLE_RATIO": "1.5"}, "telemetry.sample_ratio"),
        ({"SCHEDULER__TELEMETRY__EXPORTER": "otlp-grpc"}, "telemetry.otlp_endpoint"),
        ({"SCHEDULER__TELEMETRY__EXPORTER": "zipkin"}, "telemetry.exporter"),
        (
            {"SCHEDULER__TELEMETRY__RESOURCE_ATTRIBUTES": '["no-equals-sign"]'},
            "telemetry.resource_attributes",
        ),
    ],
)
def test_bad_telemetry_settings_are_refused_naming_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(env, path=None)
    assert key in str(error.value)


def test_each_component_names_itself_in_the_resource(exporter: InMemorySpanExporter) -> None:
    settings = replace(
        Settings(),
        telemetry=TelemetrySettings(resource_attributes=("deployment.environment=prod",)),
    )
    provider = build_tracer_provider(
        settings, components=["dispatcher"], processor=SimpleSpanProcessor(exporter)
    )
    assert provider is not None
    attributes = provider.resource.attributes
    assert attributes["service.name"] == "scheduler-dispatcher"
    assert attributes["service.namespace"] == "scheduler"
    assert attributes["deployment.environment"] == "prod"
    assert "process.pid" in attributes
    assert service_name(["api", "dispatcher", "worker"]) == "scheduler"


def test_a_span_continues_the_trace_a_traceparent_names(
    tracer: OpenTelemetryTracer, exporter: InMemorySpanExporter
) -> None:
    with (
        tracer.span("run.consume", parent=TRACEPARENT, kind=SpanKind.CONSUMER) as consume,
        tracer.span("run.execute") as execute,
    ):
        inner = tracer.current_traceparent()
        execute.set_attribute("scheduler.run.status", "failed")
        execute.set_error("failed")
    assert consume.traceparent is not None
    assert consume.traceparent.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert inner == execute.traceparent
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["run.consume"].parent is not None
    assert spans["run.consume"].parent.span_id == 0xB7AD6B7169203331
    assert spans["run.consume"].kind is trace.SpanKind.CONSUMER
    assert spans["run.execute"].parent is not None
    assert spans["run.execute"].parent.span_id == spans["run.consume"].context.span_id
    assert spans["run.execute"].status.status_code is trace.StatusCode.ERROR


def test_a_root_span_or_a_new_trace_starts_a_trace_of_its_own(
    tracer: OpenTelemetryTracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.span("outer") as outer, tracer.span("run.schedule", root=True) as root:
        assert outer.traceparent is not None
        assert root.traceparent is not None
        assert root.traceparent.split("-")[1] != outer.traceparent.split("-")[1]
    started = tracer.start_trace("run.dependency", links=[TRACEPARENT])
    assert started is not None
    [dependency] = [s for s in exporter.get_finished_spans() if s.name == "run.dependency"]
    assert dependency.parent is None
    assert [link.context.span_id for link in dependency.links] == [0xB7AD6B7169203331]


def test_a_malformed_traceparent_starts_a_new_trace(tracer: OpenTelemetryTracer) -> None:
    with tracer.span("run.consume", parent="garbage") as span:
        assert span.traceparent is not None


def test_client_spans_without_a_parent_are_not_recorded(
    tracer: OpenTelemetryTracer, exporter: InMemorySpanExporter
) -> None:
    """A heartbeat's SQL statement would be a trace of its own: dropped. The same statement
    inside a run's span is recorded."""
    provider_tracer = tracer._tracer
    with provider_tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT):
        pass
    with (
        tracer.span("run.trigger"),
        provider_tracer.start_as_current_span("INSERT", kind=trace.SpanKind.CLIENT),
    ):
        pass
    assert sorted(span.name for span in exporter.get_finished_spans()) == [
        "INSERT",
        "run.trigger",
    ]


def test_no_secret_leaves_the_process_in_a_span(
    tracer: OpenTelemetryTracer, exporter: InMemorySpanExporter
) -> None:
    """Whatever an instrumentation or a use case puts in a span is redacted before export,
    with the same rules as the logs."""
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2ln"
    with tracer.span("run.execute") as span:
        span.set_attribute("http.url", "https://hooks.example.com/x?access_token=hunter2hunter2")
        span.set_attribute("http.request.header.authorization", f"Bearer {token}")
        span.set_attribute("scheduler.run.attempt", 2)
        span.set_error("connect to postgres://app:s3cr3t-pass@db/app failed")
    [exported] = exporter.get_finished_spans()
    text = repr(dict(exported.attributes or {})) + str(exported.status.description)
    for secret in ("hunter2hunter2", token, "s3cr3t-pass"):
        assert secret not in text
    assert "[REDACTED]" in str(exported.attributes["http.url"])
    assert exported.attributes["scheduler.run.attempt"] == 2
    assert exported.status.status_code is trace.StatusCode.ERROR
