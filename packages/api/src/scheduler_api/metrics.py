"""``/metrics`` and the HTTP request metrics.

The API does not know Prometheus: it is handed a :class:`MetricsExporter` (the composition root
passes the process's registry) that renders the exposition format and counts requests. Requests
are counted by *route template* (``/api/v1/runs/{run_id:str}``), never by raw path, so the label
cannot grow with the number of runs; a path no route matches counts as ``unmatched``.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_api.auth import PUBLIC
from scheduler_application.accounts.access import Principal
from scheduler_application.errors import PermissionDenied

METRICS_PATH = "/metrics"


class MetricsExporter(Protocol):
    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format ``accept`` asks for, and its content type."""
        ...

    def observe_request(
        self, *, method: str, route: str | None, status: int, seconds: float
    ) -> None: ...


class RequestMetrics:
    """ASGI wrapper around the whole app (outside routing, so 404s count too): one observation
    per HTTP request, when its response is complete."""

    def __init__(self, app: ASGIApp, exporter: MetricsExporter) -> None:
        self._app = app
        self._exporter = exporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, observed_send)
        finally:
            route: Any = scope.get("path_template")
            self._exporter.observe_request(
                method=str(scope.get("method", "GET")),
                route=route if isinstance(route, str) else None,
                status=status,
                seconds=time.perf_counter() - started,
            )


def metrics_route(exporter: MetricsExporter, *, public: bool) -> HTTPRouteHandler:
    """``GET /metrics``: open to anyone when ``public``, else to roles that see every owner's
    runs (admin, operator), authenticated like the rest of the API."""

    if public:

        @get(METRICS_PATH, opt={PUBLIC: True}, include_in_schema=False, sync_to_thread=False)
        def open_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
            body, content_type = exporter.render(request.headers.get("accept"))
            return Response(body, media_type=content_type)

        return open_metrics

    @get(METRICS_PATH, include_in_schema=False, sync_to_thread=False)
    def guarded_metrics(
        request: Request[Any, Any, Any], principal: NamedDependency[Principal]
    ) -> Response[bytes]:
        if not principal.role.sees_all_tasks:
            raise PermissionDenied("metrics are for operators and admins")
        body, content_type = exporter.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return guarded_metrics
