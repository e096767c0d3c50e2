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
