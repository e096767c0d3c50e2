"""The app factory: a Litestar application around already-built application services.

It knows nothing about databases or brokers (those are :mod:`scheduler_api.bootstrap`'s), so
tests and the combined launcher can hand it whatever honours the ports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.middleware.base import DefineMiddleware
from litestar.plugins import PluginProtocol
from litestar.types import Middleware

from scheduler_api.auth import PrincipalMiddleware, provide_principal
from scheduler_api.controllers.api_keys import ApiKeyController
from scheduler_api.controllers.auth import AuthController
from scheduler_api.controllers.events import EventController
from scheduler_api.controllers.health import HealthController
from scheduler_api.controllers.queues import QueueController
from scheduler_api.controllers.runs import RunController
from scheduler_api.controllers.system import SystemController
from scheduler_api.controllers.tasks import TaskController
from scheduler_api.controllers.users import UserController
from scheduler_api.controllers.webhooks import WebhookController
from scheduler_api.controllers.worker_protocol import WorkerProtocolController
from scheduler_api.controllers.workers import WorkerController
from scheduler_api.errors import OBSERVER_STATE, handle_exception
from scheduler_api.metrics import RequestMetrics, metrics_route
from scheduler_api.openapi import ClosedStructSchemaPlugin, openapi_config
from scheduler_api.options import options_response
from scheduler_api.request_checks import check_request
from scheduler_api.services import ApiOptions, ApiServices

API_PREFIX = "/api/v1"


async def before_each_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    if request.method == "OPTIONS":
        return options_response(request)
    await check_request(request)
    return None


def create_app(
    *,
    services: ApiServices,
    options: ApiOptions | None = None,
    plugins: Sequence[PluginProtocol] = (),
    middleware: Sequence[Middleware] = (),
) -> Litestar:
    options = options or ApiOptions()
    v1 = Router(
        path=API_PREFIX,
        route_handlers=[
            TaskController,
            RunController,
            EventController,
            WebhookController,
            WorkerController,
            QueueController,
            SystemController,
            AuthController,
            ApiKeyController,
            UserController,
            WorkerProtocolController,
        ],
    )
    extra: list[HTTPRouteHandler] = []
    if options.metrics is not None:
        extra.append(metrics_route(options.metrics, public=options.metrics_public))
    app = Litestar(
        route_handlers=[HealthController, *extra, v1],
        dependencies={
            "services": Provide(lambda: services, sync_to_thread=False, use_cache=True),
            "options": Provide(lambda: options, sync_to_thread=False, use_cache=True),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        middleware=[*middleware, DefineMiddleware(PrincipalMiddleware, auth=services.auth)],
        exception_handlers={Exception: handle_exception},
        before_request=before_each_request,
        request_max_body_size=options.max_body_bytes,
        openapi_config=openapi_config(version=options.version),
        on_startup=[services.auth.warm_up],
        # Stops the background retries of publishes that failed (their runs stay queued).
        on_shutdown=[services.runs.aclose, services.event_watcher.aclose],
        logging_config=None,
        debug=False,
        state=State({OBSERVER_STATE: services.observer}),
        plugins=[ClosedStructSchemaPlugin(), *plugins],
    )
    if options.metrics is not None:
        # Outside routing and the exception handlers, so every request is counted, 404s too.
        app.asgi_handler = RequestMetrics(app.asgi_handler, options.metrics)
    return app
