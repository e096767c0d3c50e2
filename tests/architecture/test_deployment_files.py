"""Deployment files parse and describe what the docs promise."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_backing_services_have_healthchecks_and_named_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "redis"):
        assert "healthcheck" in services[name], name
        named = services[name]["volumes"][0].split(":")[0]
        assert named in compose["volumes"], name
    assert "management" in services["rabbitmq"]["image"]


def test_compose_runs_the_distributed_stack_in_order() -> None:
    services = _compose()["services"]
    assert {"migrate", "api", "dispatcher", "worker-1", "worker-2", "prometheus"} <= set(services)
    assert services["migrate"]["command"] == ["scheduler", "migrate", "upgrade"]
    for name in ("api", "dispatcher", "worker-1", "worker-2"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "healthcheck" in service, name
    assert services["api"]["command"] == ["scheduler-api"]
    assert services["dispatcher"]["command"] == ["scheduler-dispatcher"]
    assert services["worker-1"]["command"] == ["scheduler-worker"]


def test_no_secret_is_committed_in_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "SCHEDULER__API__JWT_SECRET: ${SCHEDULER_JWT_SECRET:-}" in text


def test_prometheus_scrapes_every_component() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert {"api:8000", "dispatcher:9101", "worker-1:9102", "worker-2:9102"} <= targets


def test_dockerfile_is_multi_stage() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "uv sync --frozen" in text


def test_every_component_sends_its_traces_to_the_compose_trace_backend() -> None:
    compose = _compose()
    services = compose["services"]
    assert "jaeger" in services
    for name in ("api", "dispatcher", "worker-1", "worker-2"):
        environment = services[name]["environment"]
        assert environment["SCHEDULER__TELEMETRY__EXPORTER"] == "otlp-grpc", name
        assert environment["SCHEDULER__TELEMETRY__OTLP_ENDPOINT"] == "http://jaeger:4317", name
