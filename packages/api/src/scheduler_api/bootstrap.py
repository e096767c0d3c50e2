"""The API's composition root: the only module of the API that knows the adapters.

``build_api(resources)`` gives a ready Litestar app on the process's shared resources, and
``serve(app, …)`` runs it with uvicorn inside the caller's event loop until ``stop`` is set, so
``scheduler-api`` and the combined ``scheduler run`` launcher start it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from importlib import metadata
from typing import Any

import uvicorn
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.plugins import PluginProtocol
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Middleware, Receive, Scope, Send

from scheduler_api.app import create_app
from scheduler_api.metrics import MetricsExporter
from scheduler_api.services import ApiOptions, ApiServices, Probe
from scheduler_api.throttle import LoginThrottle
from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.auth import AuthService, SessionPolicy
from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_application.accounts.request_limits import RequestLimits
from scheduler_application.accounts.teams import TeamService
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.events.log import EventService
from scheduler_application.events.stream import LogWatcher
from scheduler_application.events.webhooks import WebhookService
from scheduler_application.execution.remote_workers import RemoteWorkerService
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.limits.service import LimitService
from scheduler_application.operations.bulk import BulkRunner, BulkService
from scheduler_application.operations.queue_control import QueueControl
from scheduler_application.operations.status_report import StatusService
from scheduler_application.ports.coordination import CountingRateLimiter, RateInspector
from scheduler_application.ports.security import PasswordHasher, TokenCodec
from scheduler_application.runs.batch_trigger import BatchTrigger
from scheduler_application.runs.service import RunService
from scheduler_application.runs.trigger_group import TriggerGroup
from scheduler_application.tasks.apply import TaskApplyService
from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_application.tasks.graph import TaskGraphService
from scheduler_application.tasks.read_cache import TaskCache
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.service import TemplateService
from scheduler_infrastructure.config import Settings as Settings
from scheduler_infrastructure.config.loader import (
    parse_queue_rate_limits,
    parse_role_rate_limits,
)
from scheduler_infrastructure.event_loop import run as run_event_loop
from scheduler_infrastructure.event_readers import build_webhook_sender, build_webhook_store
from scheduler_infrastructure.persistence.session_changes import keep_listening
from scheduler_infrastructure.persistence.task_rows import keep_forgetting
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.ratelimit import LocalRateLimiter, RedisRateLimiter
from scheduler_infrastructure.resources import Resources, build_relay, open_resources
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher
from scheduler_infrastructure.security.tokens import MIN_SECRET_BYTES, JwtTokenCodec
from scheduler_infrastructure.startup import StartupError, prepare
from scheduler_infrastructure.telemetry.tracing import name_request_span
from scheduler_infrastructure.waiting import StartupInterrupted, wait_for_database

__all__ = [
    "StartupError",
    "StartupInterrupted",
    "api_options",
    "bind",
    "build_api",
    "build_services",
    "load",
    "open_resources",
    "require_jwt_secret",
    "run_event_loop",
    "serve",
]

logger = logging.getLogger("scheduler.api")
#: Where the app keeps its cache of accepted credentials (``app.state``), for inspection.
PRINCIPAL_CACHE_STATE = "principal_cache"
TASK_CACHE_STATE = "task_cache"
#: How long in-flight requests (long-polls included) get after a stop before they are cut.
GRACEFUL_SHUTDOWN_SECONDS = 10


def load(environ: Mapping[str, str] | None = None) -> Settings:
    settings = prepare("api", standalone=True, environ=environ)
    require_jwt_secret(settings)
    return settings


def require_jwt_secret(settings: Settings) -> str:
    """The signing secret, or a StartupError saying how to set one (length is checked by the
    config loader; the codec checks it again)."""
    secret = settings.api.jwt_secret
    if not secret:
        raise StartupError(
            "invalid configuration: api.jwt_secret: not set; point SCHEDULER__API__JWT_SECRET_FILE "
            f"at a file holding at least {MIN_SECRET_BYTES} random bytes (or export "
            "SCHEDULER__API__JWT_SECRET), for example one made with "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))' > var/jwt-secret; "
            "./scripts/run does this for you"
        )
    return secret


def software_version() -> str:
    try:
        return metadata.version("scheduler-api")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def config_summary(settings: Settings) -> dict[str, Any]:
    """What ``/system`` shows: choices and limits, never URLs, passwords or secrets."""
    database = settings.database.url.split(":", 1)[0].split("+", 1)[0]
    return {
        "source": settings.source,
        "run_mode": settings.run.mode,
        "database_backend": database,
        "queue_backend": settings.queue.backend,
        "api": {
            "jwt_issuer": settings.api.jwt_issuer,
            "jwt_audience": settings.api.jwt_audience,
            "access_token_ttl_seconds": settings.api.access_token_ttl_seconds,
            "refresh_token_ttl_seconds": settings.api.refresh_token_ttl_seconds,
            "max_body_bytes": settings.api.max_body_bytes,
            "max_page_size": settings.api.max_page_size,
        },
        "worker": {
            "lease_seconds": settings.worker.lease_seconds,
            "heartbeat_seconds": settings.worker.heartbeat_seconds,
        },
        "telemetry_exporter": settings.telemetry.exporter,
    }


def api_options(
    settings: Settings,
    *,
    throttle: LoginThrottle | None = None,
    metrics: MetricsExporter | None = None,
) -> ApiOptions:
    cursor_key = hmac.new(
        require_jwt_secret(settings).encode(), b"scheduler-api page cursors", hashlib.sha256
    ).digest()
    console_key = hmac.new(
        require_jwt_secret(settings).encode(), b"scheduler-api console csrf", hashlib.sha256
    ).digest()
    return ApiOptions(
        cursor_key=cursor_key,
        console_key=console_key,
        console_secure_cookies=settings.api.console_secure_cookies,
        version=software_version(),
        max_body_bytes=settings.api.max_body_bytes,
        max_page_size=settings.api.max_page_size,
        config_summary=config_summary(settings),
        throttle=throttle or LoginThrottle(),
        metrics=metrics,
        metrics_public=settings.api.metrics_public,
        event_heartbeat_seconds=settings.events.heartbeat_seconds,
        event_stream_seconds=float(settings.api.access_token_ttl_seconds),
    )


def _probes(resources: Resources) -> dict[str, Probe]:
    probe_queue = (
        resources.settings.worker.queues[0] if resources.settings.worker.queues else "default"
    )

    async def database() -> None:
        await wait_for_database(resources.engine, timeout=0)  # one attempt, no retries

    async def queue() -> None:
        await resources.queue.depth(probe_queue)

    return {"database": database, "queue": queue}


def build_principal_cache(resources: Resources) -> PrincipalCache:
    """The process's cache of accepted credentials. On PostgreSQL it serves only once the
    session listener (:func:`cache_listeners`) has subscribed."""
    api = resources.settings.api
    return PrincipalCache(
        max_entries=api.auth_cache_size,
        ttl=timedelta(seconds=api.auth_cache_seconds),
        live=resources.engine.dialect.name != "postgresql",
    )


def build_task_cache(resources: Resources) -> TaskCache | None:
    """The process's cache of tasks as last read: PostgreSQL only (it serves once the task row
    listener, :func:`cache_listeners`, has subscribed); None on SQLite."""
    if resources.engine.dialect.name != "postgresql":
        return None
    api = resources.settings.api
    return TaskCache(
        max_entries=api.task_cache_size,
        ttl=timedelta(seconds=api.task_cache_seconds),
        live=False,
    )


def _inspector(limiter: object) -> RateInspector | None:
    """The rate limiter, when it can show its buckets (the local and the Redis one)."""
    return limiter if isinstance(limiter, LocalRateLimiter | RedisRateLimiter) else None


def build_request_limits(resources: Resources) -> RequestLimits | None:
    limits = parse_role_rate_limits(resources.settings.api.rate_limits)
    if not limits:
        return None
    limiter = resources.rate_limiter
    counting: CountingRateLimiter = (
        limiter if hasattr(limiter, "acquire_counted") else LocalRateLimiter()  # type: ignore[assignment]
    )
    return RequestLimits(limiter=counting, clock=resources.clock, limits=limits)


def cache_listeners(
    resources: Resources, cache: PrincipalCache, tasks: TaskCache | None = None
) -> Any:
    """The app's lifespan part that keeps ``cache`` told of session changes and ``tasks`` of
    task row changes (PostgreSQL; on SQLite there is nothing to hear)."""

    @contextlib.asynccontextmanager
    async def listening(_app: Litestar) -> AsyncIterator[None]:
        running: list[asyncio.Task[None]] = []
        if resources.engine.dialect.name == "postgresql":
            engine = resources.engine
            running.append(
                asyncio.create_task(keep_listening(engine, cache), name="api-session-listener")
            )
            if tasks is not None:
                running.append(
                    asyncio.create_task(keep_forgetting(engine, tasks), name="api-task-listener")
                )
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return listening


def build_services(
    resources: Resources,
    *,
    relay: RunRelay,
    hasher: PasswordHasher | None = None,
    codec: TokenCodec | None = None,
    principal_cache: PrincipalCache | None = None,
    task_cache: TaskCache | None = None,
) -> ApiServices:
    """``relay``: the process's one relay (:func:`build_relay`), whose gates the runs a
    trigger or a retry creates pass at once. ``principal_cache``: None for none (every
    credential checked in the database)."""
    settings = resources.settings
    uow, clock = resources.uow_factory, resources.clock
    # Reads never commit, so they need none of the wrappers ``uow_factory`` may carry.
    reads = SqlUnitOfWorkFactory(resources.engine).reads
    hasher = hasher or Argon2PasswordHasher()
    codec = codec or JwtTokenCodec(
        secret=require_jwt_secret(settings),
        issuer=settings.api.jwt_issuer,
        audience=settings.api.jwt_audience,
        clock=clock,
    )
    lease = timedelta(seconds=settings.worker.lease_seconds)
    observer = resources.metrics
    workers = WorkerService(uow_factory=uow, clock=clock, observer=observer, queue=resources.queue)
    execution = ExecutionService(
        uow_factory=uow,
        clock=clock,
        lease=lease,
        observer=observer,
        redactor=resources.redactor,
        executor_policy=resources.executor_policy,
        secret_box=resources.secret_box,
        circuits=resources.circuits,
    )
    queue_limits = parse_queue_rate_limits(settings.dispatcher.queue_rate_limits)
    tasks = TaskService(
        uow_factory=uow,
        clock=clock,
        observer=observer,
        executor_policy=resources.executor_policy,
        secret_box=resources.secret_box,
        read_uow_factory=reads,
        task_cache=task_cache,
    )
    runs = RunService(
        uow_factory=uow,
        clock=clock,
        observer=observer,
        relay=relay,
        tracer=resources.tracer,
        read_uow_factory=reads,
    )
    bulk_runner = BulkRunner(uow_factory=uow, clock=clock, runs=runs, tasks=tasks)
    # What writes tasks here besides TaskService (which forgets what it changed itself): a
    # template's new version rewrites its subscriptions, an applied file its tasks. Their
    # commits forget every task this process remembers, so that its next read is the new row
    # without waiting for the notification (rare writes: the whole cache is cheap to lose).
    task_writes = uow
    if task_cache is not None:
        forgetting = TaskChangeSignal()
        forgetting.subscribe(task_cache.invalidate)
        task_writes = forgetting.watch(uow)
    templates = TemplateService(
        uow_factory=task_writes,
        clock=clock,
        executor_policy=resources.executor_policy,
        read_uow_factory=reads,
    )
    limits = LimitService(
        uow_factory=uow,
        clock=clock,
        inspector=_inspector(resources.rate_limiter),
        circuits=resources.circuits,
    )
    batch = BatchTrigger(
        uow_factory=uow,
        clock=clock,
        relay=relay,
        observer=observer,
        max_items=settings.api.batch_max_items,
        # Triggers that need no transaction (no gate locks a row) are their reads and one
        # insert: no BEGIN and no COMMIT round trip.
        statement_uow_factory=SqlUnitOfWorkFactory(resources.engine).statement_units,
    )
    return ApiServices(
        tasks=tasks,
        batch=batch,
        triggers=TriggerGroup(batch=batch, clock=clock, tracer=resources.tracer),
        task_apply=TaskApplyService(
            uow_factory=task_writes, tasks=tasks, templates=templates, limits=limits
        ),
        bulk=BulkService(
            uow_factory=uow,
            clock=clock,
            runner=bulk_runner,
            max_items=settings.api.bulk_max_items,
        ),
        bulk_runner=bulk_runner,
        task_graph=TaskGraphService(uow_factory=uow),
        runs=runs,
        workers=workers,
        remote_workers=RemoteWorkerService(
            uow_factory=uow,
            execution=execution,
            workers=workers,
            output_limit_bytes=settings.worker.output_limit_bytes,
        ),
        status=StatusService(uow_factory=uow, clock=clock, queue=resources.queue),
        queues=QueueControl(
            uow_factory=uow,
            clock=clock,
            default_rate_limits=queue_limits,
            observer=observer,
        ),
        limits=limits,
        auth=AuthService(
            uow_factory=uow,
            clock=clock,
            hasher=hasher,
            codec=codec,
            policy=SessionPolicy(
                access_ttl=timedelta(seconds=settings.api.access_token_ttl_seconds),
                refresh_ttl=timedelta(seconds=settings.api.refresh_token_ttl_seconds),
            ),
            read_uow_factory=reads,
            principal_cache=principal_cache,
        ),
        api_keys=ApiKeyService(uow_factory=uow, clock=clock, principal_cache=principal_cache),
        users=UserAdminService(
            uow_factory=uow, clock=clock, hasher=hasher, principal_cache=principal_cache
        ),
        teams=TeamService(uow_factory=uow, clock=clock, principal_cache=principal_cache),
        events=EventService(uow_factory=uow, clock=clock),
        event_watcher=LogWatcher(
            uow_factory=uow,
            poll_seconds=settings.events.poll_seconds,
        ),
        webhooks=WebhookService(
            store=build_webhook_store(resources.engine),
            uow_factory=uow,
            sender=build_webhook_sender(settings),
            clock=clock,
            secret_box=resources.secret_box,
            timeout_seconds=settings.events.webhooks.timeout_seconds,
        ),
        clock=clock,
        templates=templates,
        probes=_probes(resources),
        observer=observer,
        request_limits=build_request_limits(resources),
    )


def build_api(
    resources: Resources,
    *,
    relay: RunRelay | None = None,
    hasher: PasswordHasher | None = None,
    throttle: LoginThrottle | None = None,
) -> Litestar:
    """The API on ``resources`` (shared with other components in ``scheduler run``); its
    ``/metrics`` serves the process's one registry, so in ``scheduler run`` it shows the
    dispatcher's and the worker's metrics as well. ``relay``: the process's relay, closed by
    whoever built it; without one the API builds its own and closes it at shutdown."""
    on_shutdown: list[Callable[[], Awaitable[None]]] = []
    if relay is None:
        relay = build_relay(resources)
        # Stops the background retries of publishes that failed (their runs stay queued).
        on_shutdown.append(relay.aclose)
    cache = build_principal_cache(resources)
    task_cache = build_task_cache(resources)
    services = build_services(
        resources, relay=relay, hasher=hasher, principal_cache=cache, task_cache=task_cache
    )
    options = api_options(resources.settings, throttle=throttle, metrics=resources.metrics)
    plugins: list[PluginProtocol] = []
    middleware: list[Middleware] = []
    if resources.tracing.provider is not None:
        # A server span per request, parent of the use cases' spans (a trigger's run.trigger).
        plugins.append(
            OpenTelemetryPlugin(
                OpenTelemetryConfig(
                    tracer_provider=resources.tracing.provider,
                    exclude_spans=["receive", "send"],
                )
            )
        )
        middleware.append(_name_request_spans)
    app = create_app(
        services=services,
        options=options,
        plugins=plugins,
        middleware=middleware,
        lifespan=[cache_listeners(resources, cache, task_cache)],
        on_shutdown=on_shutdown,
    )
    app.state[PRINCIPAL_CACHE_STATE] = cache
    app.state[TASK_CACHE_STATE] = task_cache
    return app


def _name_request_spans(app: ASGIApp) -> ASGIApp:
    """After routing, name the request's span by its route template (the tracing plugin opens
    the span before routing, when only the raw path is known)."""

    async def named(scope: Scope, receive: Receive, send: Send) -> None:
        template = scope.get("path_template")
        if scope["type"] == ScopeType.HTTP and isinstance(template, str):
            name_request_span(str(scope.get("method", "GET")), template)
        await app(scope, receive, send)

    return named


def bind(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A listening socket; ``port=0`` picks a free one (read it from ``getsockname``). Binding
    before serving turns "address in use" into a plain OSError for the caller, and connections
    that arrive while the app starts wait in the backlog instead of being refused."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the event loop owns the signals
    and tells the server to stop through ``serve``'s ``stop`` event."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    app: Litestar,
    *,
    stop: asyncio.Event,
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` until ``stop`` is set: then stop accepting, let requests in flight finish
    (up to GRACEFUL_SHUTDOWN_SECONDS), run the app's shutdown and return."""
    sock = sock or bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _EmbeddedServer(config)

    async def watch() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(watch(), name="api-stop-watcher")
    logger.info("api listening on http://%s:%s", bound_host, bound_port)
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        sock.close()
    if not server.started:
        raise OSError(f"the api could not start on {bound_host}:{bound_port}")
