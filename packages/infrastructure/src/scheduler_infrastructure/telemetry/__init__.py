"""Telemetry adapters: Prometheus metrics (and their scrape endpoint), secret redaction."""

from scheduler_infrastructure.telemetry.metrics import PrometheusMetrics
from scheduler_infrastructure.telemetry.metrics_server import (
    MetricsServer,
    component_metrics,
    serve_metrics,
)
from scheduler_infrastructure.telemetry.redaction import SecretRedactor

__all__ = [
    "MetricsServer",
    "PrometheusMetrics",
    "SecretRedactor",
    "component_metrics",
    "serve_metrics",
]
