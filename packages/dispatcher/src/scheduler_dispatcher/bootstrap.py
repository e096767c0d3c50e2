"""The dispatcher's composition root: the only module of the dispatcher that knows the adapters."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from scheduler_application.dependencies import DependencyResolver
from scheduler_application.event_log import EventService
from scheduler_application.event_topic import EventTopicRelay
from scheduler_application.gauges import ClusterGauges
from scheduler_application.ports.observer import RunObserver
from scheduler_application.rate_limiting import RunRateLimits
from scheduler_application.reaper import LeaseReaper
from scheduler_application.relay import RunRelay
from scheduler_application.routing import Router
from scheduler_application.scheduling import ScheduleFiring
from scheduler_application.task_changes import TaskChangeSignal
from scheduler_application.webhook_delivery import WebhookDispatcher
from scheduler_application.workers import WorkerService
from scheduler_dispatcher.loops import (
    LoopTimings,
    PeriodicLoop,
    event_retention_loop,
    event_topic_loop,
    gauge_loop,
    reliability_loops,
    webhook_loop,
)
from scheduler_dispatcher.scheduler_loop import SchedulerLoop, dependency_loop
from scheduler_dispatcher.service import Dispatcher
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.loader import parse_queue_rate_limits
from scheduler_infrastructure.event_readers import (
    build_consumer_positions,
    build_event_topic,
    build_webhook_sender,
    build_webhook_store,
    delivery_settings,
)
from scheduler_infrastructure.persistence.leases import SqlLeaseStore
from scheduler_infrastructure.persistence.task_changes import TaskChangeListener
from scheduler_infrastructure.resources import Resources, open_resources
from scheduler_infrastructure.startup import StartupError, prepare
from scheduler_infrastructure.telemetry import MetricsServer, serve_metrics
from scheduler_infrastructure.waiting import StartupInterrupted

__all__ = [
    "StartupError",
    "StartupInterrupted",
    "build_dispatcher",
    "load",
    "metrics_endpoint",
    "open_resources",
]


def load() -> Settings:
    return prepare("dispatcher", standalone=True)


def build_dispatcher(
    resources: Resources, *, task_changes: TaskChangeSignal | None = None
) -> Dispatcher:
    """Every loop of one dispatcher. ``task_changes``: the signal the process's own task
    writers fire (``scheduler run`` passes the one it wraps the API's unit of work with), so
    the scheduler wakes at once on an edit; on PostgreSQL ``LISTEN`` does that across
    processes as well."""
    settings = resources.settings
    d = settings.dispatcher
    timings = LoopTimings(
        relay_interval=timedelta(seconds=d.relay_interval_seconds),
        reaper_interval=timedelta(seconds=d.reaper_interval_seconds),
        requeue_after=timedelta(seconds=d.requeue_after_seconds),
        worker_silence=settings.worker.silence,
        batch_size=d.batch_size,
        gauge_interval=timedelta(seconds=d.gauge_interval_seconds),
    )
    uow, clock = resources.uow_factory, resources.clock
    observer: RunObserver = resources.metrics
    relay = RunRelay(
        uow_factory=uow,
        clock=clock,
        queue=resources.queue,
        router=Router(worker_timeout=timings.worker_silence),
        rate_limits=RunRateLimits(
            limiter=resources.rate_limiter,
            queue_limits=parse_queue_rate_limits(resources.settings.dispatcher.queue_rate_limits),
            observer=observer,
        ),
        tracer=resources.tracer,
    )
    scheduler = SchedulerLoop(
        ScheduleFiring(
            uow_factory=uow,
            clock=clock,
            relay=relay,
            observer=observer,
            tracer=resources.tracer,
            fire_ahead=timedelta(seconds=d.fire_ahead_seconds),
        ),
        batch_size=d.batch_size,
        max_sleep=timedelta(seconds=d.max_sleep_seconds),
    )
    loops: list[PeriodicLoop] = [
        scheduler,
        dependency_loop(
            DependencyResolver(
                uow_factory=uow,
                clock=clock,
                relay=relay,
                observer=observer,
                tracer=resources.tracer,
            ),
            interval=timings.relay_interval,
            batch_size=d.batch_size,
        ),
        *reliability_loops(
            relay=relay,
            reaper=LeaseReaper(uow_factory=uow, clock=clock, observer=observer),
            workers=WorkerService(uow_factory=uow, clock=clock, observer=observer),
            timings=timings,
        ),
        gauge_loop(
            ClusterGauges(uow_factory=uow, queue=resources.queue, observer=observer),
            interval=timings.gauge_interval,
        ),
    ]
    if settings.events.retention_days > 0:
        loops.append(
            event_retention_loop(
                EventService(uow_factory=uow, clock=clock),
                keep=timedelta(days=settings.events.retention_days),
                interval=timedelta(seconds=settings.events.prune_interval_seconds),
                batch=settings.events.prune_batch,
                webhooks=build_webhook_store(resources.engine),
            )
        )
    on_stop: list[Callable[[], Awaitable[None]]] = [relay.aclose]
    loops.extend(_event_readers(resources, on_stop))
    if task_changes is not None:
        task_changes.subscribe(scheduler.wake)
    if resources.engine.dialect.name == "postgresql":
        listener = TaskChangeListener(resources.engine)

        async def listen() -> bool:
            await listener.listen(scheduler.wake)
            return False

        loops.append(
            PeriodicLoop(
                "task-changes", listen, interval=timedelta(seconds=1), stop_grace=timedelta(0)
            )
        )
    return Dispatcher(loops=loops, observer=observer, on_stop=on_stop)


def _event_readers(
    resources: Resources, on_stop: list[Callable[[], Awaitable[None]]]
) -> list[PeriodicLoop]:
    """The webhook delivery loop and the broker topic publisher, each behind its lease."""
    settings = resources.settings
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    leases = SqlLeaseStore(resources.engine)
    loops: list[PeriodicLoop] = []
    w = settings.events.webhooks
    if w.enabled:
        sender = build_webhook_sender(settings)
        on_stop.append(sender.aclose)
        loops.append(
            webhook_loop(
                WebhookDispatcher(
                    store=build_webhook_store(resources.engine),
                    uow_factory=resources.uow_factory,
                    sender=sender,
                    clock=resources.clock,
                    settings=delivery_settings(settings),
                    leases=leases,
                    holder=holder,
                    secret_box=resources.secret_box,
                ),
                interval=timedelta(seconds=w.interval_seconds),
            )
        )
    topic = build_event_topic(settings)
    if topic is not None:
        p = settings.events.publish
        loops.append(
            event_topic_loop(
                EventTopicRelay(
                    topic=topic,
                    positions=build_consumer_positions(resources.engine),
                    uow_factory=resources.uow_factory,
                    clock=resources.clock,
                    leases=leases,
                    holder=holder,
                    batch=p.batch,
                    start_at_head=p.start_at_head,
                ),
                interval=timedelta(seconds=p.interval_seconds),
            )
        )
    return loops


@contextlib.asynccontextmanager
async def metrics_endpoint(resources: Resources) -> AsyncIterator[MetricsServer | None]:
    """The standalone dispatcher's ``/metrics`` on ``dispatcher.metrics_port`` (None when 0).
    In ``scheduler run`` with the API, the API's ``/metrics`` serves the same registry."""
    d = resources.settings.dispatcher
    if not d.metrics_port:
        yield None
        return
    async with serve_metrics(resources.metrics, host=d.metrics_host, port=d.metrics_port) as srv:
        yield srv
