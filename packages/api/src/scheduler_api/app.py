"""The app factory: a Litestar application around already-built application services.

It knows nothing about databases or brokers (those are :mod:`scheduler_api.bootstrap`'s), so
tests and the combined launcher can hand it whatever honours the ports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.middleware.base import DefineMiddleware
from litestar.plugins import PluginProtocol
from litestar.types import Middleware

from scheduler_api.auth import PrincipalMiddleware, provide_principal
from scheduler_api.console import (
    CONSOLE_STATE,
    ConsoleHeaders,
    console_routers,
    new_console_state,
    root_redirect,
    template_config,
)
from scheduler_api.controllers.api_keys import ApiKeyController
from scheduler_api.controllers.auth import AuthController
from scheduler_api.controllers.batch import BatchController
from scheduler_api.controllers.bulk import (
    BulkRunsController,
    BulkTasksController,
    OperationController,
)
from scheduler_api.controllers.events import EventController
from scheduler_api.controllers.health import HealthController
from scheduler_api.controllers.limits import CircuitController, LimitController
from scheduler_api.controllers.queues import QueueController
from scheduler_api.controllers.runs import RunController
from scheduler_api.controllers.system import SystemController
from scheduler_api.controllers.tasks import TaskController
from scheduler_api.controllers.teams import TeamController
from scheduler_api.controllers.templates import SubscriptionController, TemplateController
from scheduler_api.controllers.users import UserController
from scheduler_api.controllers.webhooks import WebhookController
from scheduler_api.controllers.worker_protocol import WorkerProtocolController
from scheduler_api.controllers.workers import WorkerController
from scheduler_api.dependencies import SERVICES_STATE, Options, Services
from scheduler_api.errors import OBSERVER_STATE, handle_exception
from scheduler_api.metrics import RequestMetrics, metrics_route
from scheduler_api.openapi import ClosedStructSchemaPlugin, openapi_config
from scheduler_api.options import options_response
from scheduler_api.request_checks import check_request
from scheduler_api.services import ApiOptions, ApiServices
from scheduler_application.accounts.access import Principal

API_PREFIX = "/api/v1"


async def before_each_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    if request.method == "OPTIONS":
        return options_response(request)
    await check_request(request)
    return None


def _dependencies(services: ApiServices, options: ApiOptions) -> dict[str, Provide]:
    """``options`` → ``services`` → ``principal``, each depending on the one before: Litestar
    resolves a handler's dependencies that do not depend on each other concurrently, in a task
    group of their own per request, which cost more than the three lookups themselves."""

    def provide_options() -> ApiOptions:
        return options

    def provide_services(options: Options) -> ApiServices:
        return services

    def principal_after_services(request: Request[Any, Any, Any], services: Services) -> Principal:
        return provide_principal(request)

    return {
        "options": Provide(provide_options, sync_to_thread=False, use_cache=True),
        "services": Provide(provide_services, sync_to_thread=False, use_cache=True),
        "principal": Provide(principal_after_services, sync_to_thread=False),
    }


def create_app(
    *,
    services: ApiServices,
    options: ApiOptions | None = None,
    plugins: Sequence[PluginProtocol] = (),
    middleware: Sequence[Middleware] = (),
    lifespan: Sequence[Callable[[Litestar], AbstractAsyncContextManager[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Litestar:
    """``lifespan``: what runs as long as the app serves (the bootstrap's listeners);
    ``on_shutdown``: closes what the app owns, once it stopped serving."""
    options = options or ApiOptions()
    v1 = Router(
        path=API_PREFIX,
        route_handlers=[
            TaskController,
            BatchController,
            BulkRunsController,
            BulkTasksController,
            OperationController,
            RunController,
            EventController,
            WebhookController,
            TemplateController,
            SubscriptionController,
            WorkerController,
            QueueController,
            LimitController,
            CircuitController,
            SystemController,
            AuthController,
            ApiKeyController,
            UserController,
            TeamController,
            WorkerProtocolController,
        ],
    )
    extra: list[HTTPRouteHandler] = []
    if options.metrics is not None:
        extra.append(metrics_route(options.metrics, public=options.metrics_public))
    app = Litestar(
        route_handlers=[
            HealthController,
            *extra,
            v1,
            root_redirect,
            *console_routers(),
        ],
        dependencies=_dependencies(services, options),
        middleware=[
            *middleware,
            DefineMiddleware(
                PrincipalMiddleware, auth=services.auth, limits=services.request_limits
            ),
        ],
        exception_handlers={Exception: handle_exception},
        before_request=before_each_request,
        request_max_body_size=options.max_body_bytes,
        openapi_config=openapi_config(version=options.version),
        on_startup=[services.auth.warm_up, services.bulk_runner.watch],
        lifespan=list(lifespan),
        # Stops this process's bulk operations (another API process takes them over), the
        # event watcher, lets the triggers' group under way commit, then what the app owns
        # (its relay's background publishes, when it built the relay).
        on_shutdown=[
            services.bulk_runner.aclose,
            services.event_watcher.aclose,
            services.triggers.aclose,
            *on_shutdown,
        ],
        logging_config=None,
        debug=False,
        state=State(
            {
                OBSERVER_STATE: services.observer,
                CONSOLE_STATE: new_console_state(services, options),
                SERVICES_STATE: services,
            }
        ),
        template_config=template_config(),
        plugins=[ClosedStructSchemaPlugin(), *plugins],
    )
    app.asgi_handler = ConsoleHeaders(app.asgi_handler)
    if options.metrics is not None:
        # Outside routing and the exception handlers, so every request is counted, 404s too.
        app.asgi_handler = RequestMetrics(app.asgi_handler, options.metrics)
    return app
