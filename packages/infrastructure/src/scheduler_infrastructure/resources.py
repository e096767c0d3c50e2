"""The process's shared resources, opened once and closed once by a composition root.

In ``scheduler run`` every component of the process shares one :class:`Resources`: one
database pool, one queue connection (and so one in-process memory queue), one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from opentelemetry.sdk.trace import SpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.dispatch.routing import DEFAULT_WORKER_TIMEOUT, Router
from scheduler_application.limits.circuits import CircuitBreakers, CircuitSettings
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.coordination import RateLimiter
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.redaction import NO_SECRET_SCOPE, Redactor, SecretScope
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.circuits import CircuitPolicy
from scheduler_domain.executor_policy import ExecutorPolicy
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.loader import parse_circuit_hosts, parse_queue_rate_limits
from scheduler_infrastructure.factories import (
    build_engine,
    build_executor_policy,
    build_rate_limiter,
    build_secret_box,
    build_unit_of_work_factory,
)
from scheduler_infrastructure.persistence.kept_connections import (
    keep_connections,
    release_kept_connections,
)
from scheduler_infrastructure.queues.factory import build_run_queue
from scheduler_infrastructure.ratelimit import LocalRateLimiter
from scheduler_infrastructure.telemetry.metrics import PrometheusMetrics
from scheduler_infrastructure.telemetry.redaction import PROCESS_RUN_SECRETS, SecretRedactor
from scheduler_infrastructure.telemetry.tracing import Tracing, build_tracing
from scheduler_infrastructure.waiting import retry_until_ready, wait_for_database


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    #: Units of work on ``engine`` (``scheduler run`` wraps it to hear of task changes).
    uow_factory: UnitOfWorkFactory
    queue: RunQueue
    clock: SystemClock
    #: The process's one metrics registry: every component of the process reports into it.
    metrics: PrometheusMetrics = field(default_factory=PrometheusMetrics)
    #: Scrubs secrets from stored run output (the same rules as the logs).
    redactor: Redactor = field(default_factory=SecretRedactor)
    #: The rate limits' buckets: in Redis when ``redis.url`` is set (shared by every process),
    #: else in-process. Shared by the dispatcher's relay and the API's immediate dispatch.
    rate_limiter: RateLimiter = field(default_factory=LocalRateLimiter)
    #: Which role may use which executor, and the python callables tasks may name.
    executor_policy: ExecutorPolicy = field(default_factory=ExecutorPolicy)
    #: Traces: the tracer the use cases get (no-op when ``telemetry.exporter`` is "none").
    tracing: Tracing = field(default_factory=Tracing)
    #: Seals and opens tasks' ``secret_env`` (None: no ``secrets.key`` configured).
    secret_box: SecretBox | None = None
    #: Where the worker registers a run's secret values while it runs, so that the process's
    #: redactors (logs, spans, stored output) mask them.
    run_secrets: SecretScope = NO_SECRET_SCOPE
    #: The circuit breakers' policies (``dispatcher.circuit_*``), for the gates and outcomes.
    circuits: CircuitBreakers = field(default_factory=CircuitBreakers)

    @property
    def tracer(self) -> Tracer:
        return self.tracing.tracer


def build_circuits(settings: Settings) -> CircuitBreakers:
    dispatcher = settings.dispatcher
    return CircuitBreakers(
        CircuitSettings(
            default=CircuitPolicy(
                failure_threshold=dispatcher.circuit_failure_threshold,
                cool_down=timedelta(seconds=dispatcher.circuit_cool_down_seconds),
            ),
            hosts=parse_circuit_hosts(dispatcher.circuit_hosts),
            per_host=dispatcher.circuit_per_host,
        )
    )


def compose_relay(
    *,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    queue: RunQueue,
    rate_limiter: RateLimiter,
    worker_silence: timedelta = DEFAULT_WORKER_TIMEOUT,
    queue_limits: Mapping[str, RateLimit] | None = None,
    observer: RunObserver = NO_OBSERVER,
    tracer: Tracer = NO_TRACER,
    circuits: CircuitBreakers | None = None,
) -> RunRelay:
    """A relay on the parts given: routing that counts a worker silent for
    ``worker_silence`` as gone, the rate limits of tasks (and of queues, ``queue_limits``)
    drawn from ``rate_limiter``. What :func:`build_relay` builds, and what tests build on
    parts of their own."""
    return RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        router=Router(worker_timeout=worker_silence),
        rate_limits=RunRateLimits(
            limiter=rate_limiter, queue_limits=queue_limits, observer=observer
        ),
        tracer=tracer,
        circuits=circuits,
        observer=observer,
    )


def build_relay(resources: Resources) -> RunRelay:
    """The relay of a process: its gates (routing by ``worker.silence``, the rate limits of
    tasks and of ``dispatcher.queue_rate_limits``) and its publishing. Build one per process
    and hand it to every component that creates runs (the API's triggers, the dispatcher's
    loops): they share its memory of full tasks, its routing history and its background
    publishes. Whoever builds it closes it (``aclose``) once those components stopped."""
    settings = resources.settings
    return compose_relay(
        uow_factory=resources.uow_factory,
        clock=resources.clock,
        queue=resources.queue,
        worker_silence=settings.worker.silence,
        rate_limiter=resources.rate_limiter,
        queue_limits=parse_queue_rate_limits(settings.dispatcher.queue_rate_limits),
        observer=resources.metrics,
        tracer=resources.tracer,
        circuits=resources.circuits,
    )


async def _open_queue(queue: Any, *, timeout: float, stop: asyncio.Event | None) -> None:
    await retry_until_ready(queue.__aenter__, what="queue", timeout=timeout, stop=stop)


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    components: Sequence[str] = (),
    span_processor: SpanProcessor | None = None,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[Resources]:
    """``components``: what this process runs (``api``, ``dispatcher``, ``worker``), which
    names it in its traces. ``span_processor`` replaces the configured trace exporter (and
    turns tracing on): tests pass an in-memory one. ``stop`` (set by SIGTERM) ends the
    waiting for the database or the queue at once (:class:`StartupInterrupted`)."""
    engine = build_engine(settings)
    # Read and statement units of work keep a few connections between them; all given back
    # before the engine is disposed of (below).
    keep_connections(engine)
    redactor = SecretRedactor.from_settings(settings)
    tracing = build_tracing(
        settings, components=components, processor=span_processor, redactor=redactor
    )
    tracing.instrument(engine)
    try:
        timeout = settings.database.connect_retry_seconds
        await wait_for_database(engine, timeout=timeout, stop=stop)
        queue = build_run_queue(
            backend=settings.queue.backend,
            engine=engine,
            rabbitmq_url=_with_password(settings.rabbitmq.url, settings.rabbitmq.password),
            redis_url=_with_password(settings.redis.url, settings.redis.password),
            prefix=settings.queue.prefix,
        )
        await _open_queue(queue, timeout=timeout, stop=stop)
        metrics = PrometheusMetrics()
        limiter, close_limiter = build_rate_limiter(settings, metrics)
        try:
            yield Resources(
                settings=settings,
                engine=engine,
                uow_factory=build_unit_of_work_factory(engine),
                queue=queue,
                clock=SystemClock(),
                metrics=metrics,
                redactor=redactor,
                rate_limiter=limiter,
                tracing=tracing,
                executor_policy=build_executor_policy(settings),
                secret_box=build_secret_box(settings),
                run_secrets=PROCESS_RUN_SECRETS,
                circuits=build_circuits(settings),
            )
        finally:
            try:
                if close_limiter is not None:
                    await close_limiter()
            finally:
                await queue.__aexit__(None, None, None)
    finally:
        try:
            try:
                await release_kept_connections(engine)
            finally:
                await engine.dispose()
        finally:
            await tracing.aclose()


def _with_password(url: str, password: str | None) -> str:
    if not url or password is None:
        return url
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
