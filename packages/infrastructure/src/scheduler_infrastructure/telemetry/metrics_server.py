"""A tiny HTTP endpoint for Prometheus in processes without the API: ``GET /metrics``.

It runs on the process's event loop (no thread), answers one request per connection and
nothing but ``/metrics`` and ``/health``, and closes with the process. Unauthenticated like
most exporters: bind it to an address only the monitoring network reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from scheduler_infrastructure.telemetry.metrics import PrometheusMetrics

logger = logging.getLogger("scheduler.metrics")

_READ_TIMEOUT = 5.0
_MAX_HEADER_LINES = 100
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class MetricsServer:
    """``async with MetricsServer(metrics, host=…, port=…) as server``; ``port=0`` picks a free
    port (``server.port`` tells which)."""

    def __init__(self, metrics: PrometheusMetrics, *, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        logger.info("metrics on http://%s:%d/metrics", self._host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, content_type, head = await self._answer(reader)
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    f"Content-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode("ascii")
                + (b"" if head else body)
            )
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, str, bool]:
        text = "text/plain; charset=utf-8"
        line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
        parts = line.decode("latin-1").split()
        accept = ""
        for _ in range(_MAX_HEADER_LINES):
            header = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        if len(parts) != 3:
            return 400, b"bad request\n", text, False
        method, target = parts[0].upper(), parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", text, False
        head = method == "HEAD"
        if target == "/metrics":
            body, content_type = self._metrics.render(accept)
            return 200, body, content_type, head
        if target == "/health":
            return 200, b"ok\n", text, head
        return 404, b"not found: try /metrics\n", text, head


@contextlib.asynccontextmanager
async def serve_metrics(
    metrics: PrometheusMetrics, *, host: str, port: int
) -> AsyncIterator[MetricsServer | None]:
    """A :class:`MetricsServer` for the block, or None when the port cannot be bound: a busy
    metrics port is logged as an error but does not keep a dispatcher or worker from working
    (Prometheus then reports the target down, which is what the alerts watch)."""
    server = MetricsServer(metrics, host=host, port=port)
    try:
        await server.__aenter__()
    except OSError as error:
        logger.error("no metrics endpoint: cannot listen on %s:%d (%s)", host, port, error)
        yield None
        return
    try:
        yield server
    finally:
        await server.__aexit__(None, None, None)


@contextlib.asynccontextmanager
async def component_metrics(
    metrics: PrometheusMetrics, *, host: str, port: int
) -> AsyncIterator[MetricsServer | None]:
    """A component's own ``/metrics`` (``dispatcher.metrics_port``, ``worker.metrics_port``):
    :func:`serve_metrics`, or none (None) when ``port`` is 0. In ``scheduler run`` with the
    API, the API's ``/metrics`` serves the process's one registry instead."""
    if not port:
        yield None
        return
    async with serve_metrics(metrics, host=host, port=port) as server:
        yield server
