"""The dispatcher's and the worker's own ``/metrics``: served on the configured port, or not at
all when it is 0 (one helper for both components and for ``scheduler run`` without the API)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from scheduler_infrastructure.telemetry import PrometheusMetrics, component_metrics

pytestmark = pytest.mark.timeout(10)


async def test_port_zero_serves_no_metrics_endpoint() -> None:
    async with component_metrics(PrometheusMetrics(), host="127.0.0.1", port=0) as server:
        assert server is None


async def test_a_port_serves_the_registry_there() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with component_metrics(PrometheusMetrics(), host="127.0.0.1", port=port) as server:
        assert server is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
    status_line = answer.split(b"\r\n")[0]
    assert b" 200 " in status_line


def _requests(metrics: PrometheusMetrics) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in metrics.registry.collect()
        if family.name == "scheduler_http_requests"
        for s in family.samples
        if s.name == "scheduler_http_requests_total"
    }


def test_requests_are_counted_in_their_series_and_odd_methods_stay_bounded() -> None:
    metrics = PrometheusMetrics()
    for _ in range(3):
        metrics.observe_request(method="GET", route="/api/v1/tasks/{id}", status=200, seconds=0.001)
    metrics.observe_request(method="GET", route="/api/v1/tasks/{id}", status=404, seconds=0.001)
    metrics.observe_request(method="get", route=None, status=999, seconds=0.001)
    # A client sending a new method name with every request: counted as "other", and what is
    # remembered to find a series again does not grow without bound.
    for n in range(3_000):
        metrics.observe_request(method=f"M{n}", route=None, status=405, seconds=0.001)
    counted = _requests(metrics)
    assert counted[("GET", "/api/v1/tasks/{id}", "200")] == 3
    assert counted[("GET", "/api/v1/tasks/{id}", "404")] == 1
    assert counted[("GET", "unmatched", "other")] == 1
    assert counted[("other", "unmatched", "405")] == 3_000
    assert len(metrics._request_series) <= 1_000
