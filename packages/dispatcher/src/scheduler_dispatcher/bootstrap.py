"""The dispatcher's composition root: the only module of the dispatcher that knows the adapters."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.events.log import EventService
from scheduler_application.events.topic import EventTopicRelay
from scheduler_application.events.webhook_delivery import WebhookDispatcher
from scheduler_application.execution.reaper import LeaseReaper
from scheduler_application.execution.workers import WorkerService
from scheduler_application.operations.gauges import ClusterGauges
from scheduler_application.operations.retention import HistoryRetention, RetentionPolicy
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.runs.dependencies import DependencyResolver
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_dispatcher.loop_group import LoopGroup
from scheduler_dispatcher.loops import (
    LoopTimings,
    PeriodicLoop,
    event_retention_loop,
    event_topic_loop,
    gauge_loop,
    reliability_loops,
    retention_loop,
    webhook_loop,
)
from scheduler_dispatcher.scheduler_loop import SchedulerLoop, dependency_loop
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.event_loop import run as run_event_loop
from scheduler_infrastructure.event_readers import (
    build_consumer_positions,
    build_event_topic,
    build_webhook_sender,
    build_webhook_store,
    delivery_settings,
)
from scheduler_infrastructure.persistence.leases import SqlLeaseStore
from scheduler_infrastructure.persistence.planner_statistics import PlannerStatistics
from scheduler_infrastructure.persistence.task_changes import TaskChangeListener
from scheduler_infrastructure.resources import Resources, build_relay, open_resources
from scheduler_infrastructure.startup import StartupError, prepare
from scheduler_infrastructure.telemetry import component_metrics
from scheduler_infrastructure.waiting import StartupInterrupted

__all__ = [
    "StartupError",
    "StartupInterrupted",
    "build_dispatcher",
    "build_relay",
    "component_metrics",
    "dispatcher_loops",
    "open_resources",
    "prepare",
    "reliability",
    "run_event_loop",
]


#: How often the dispatcher looks for young tables outgrowing their planner statistics.
STATISTICS_INTERVAL = timedelta(seconds=5)


def dispatcher_loops(
    *,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    relay: RunRelay,
    timings: LoopTimings,
    max_sleep: timedelta,
    fire_ahead: timedelta = timedelta(0),
    observer: RunObserver = NO_OBSERVER,
    tracer: Tracer = NO_TRACER,
    workers: WorkerService | None = None,
) -> tuple[SchedulerLoop, list[PeriodicLoop]]:
    """The scheduler loop and every loop a dispatcher runs with it (dependencies, the relay and
    its recovery, the reaper, worker liveness), on the parts given: what
    :func:`build_dispatcher` runs, and what tests run on parts of their own."""
    scheduler = SchedulerLoop(
        ScheduleFiring(
            uow_factory=uow_factory,
            clock=clock,
            relay=relay,
            observer=observer,
            tracer=tracer,
            fire_ahead=fire_ahead,
        ),
        batch_size=timings.batch_size,
        max_sleep=max_sleep,
    )
    loops: list[PeriodicLoop] = [
        scheduler,
        dependency_loop(
            DependencyResolver(
                uow_factory=uow_factory,
                clock=clock,
                relay=relay,
                observer=observer,
                tracer=tracer,
            ),
            interval=timings.relay_interval,
            batch_size=timings.batch_size,
        ),
        *reliability(
            uow_factory=uow_factory,
            clock=clock,
            relay=relay,
            timings=timings,
            observer=observer,
            workers=workers,
        ),
    ]
    return scheduler, loops


def reliability(
    *,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    relay: RunRelay,
    timings: LoopTimings,
    observer: RunObserver = NO_OBSERVER,
    workers: WorkerService | None = None,
) -> list[PeriodicLoop]:
    """The relay loop and its recovery, the reaper and worker liveness, on the parts given:
    what every dispatcher runs (:func:`dispatcher_loops`), and what tests run alone."""
    return reliability_loops(
        relay=relay,
        reaper=LeaseReaper(uow_factory=uow_factory, clock=clock, observer=observer),
        workers=workers or WorkerService(uow_factory=uow_factory, clock=clock, observer=observer),
        timings=timings,
    )


def build_dispatcher(
    resources: Resources,
    *,
    relay: RunRelay | None = None,
    task_changes: TaskChangeSignal | None = None,
) -> LoopGroup:
    """Every loop of one dispatcher. ``relay``: the process's relay (``scheduler run`` shares
    one with the API), closed by whoever built it; without one the dispatcher builds its own
    and closes it when it stops. ``task_changes``: the signal the process's own task writers
    fire (``scheduler run`` passes the one it wraps the API's unit of work with), so the
    scheduler wakes at once on an edit; on PostgreSQL ``LISTEN`` does that across processes
    as well."""
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
    on_stop: list[Callable[[], Awaitable[None]]] = []
    if relay is None:
        relay = build_relay(resources)
        on_stop.append(relay.aclose)
    observer: RunObserver = resources.metrics
    workers = WorkerService(
        uow_factory=resources.uow_factory,
        clock=resources.clock,
        observer=observer,
        queue=resources.queue,
    )
    scheduler, loops = dispatcher_loops(
        uow_factory=resources.uow_factory,
        clock=resources.clock,
        relay=relay,
        timings=timings,
        max_sleep=timedelta(seconds=d.max_sleep_seconds),
        fire_ahead=timedelta(seconds=d.fire_ahead_seconds),
        observer=observer,
        tracer=resources.tracer,
        workers=workers,
    )
    loops.append(
        retention_loop(
            history=HistoryRetention(
                uow_factory=resources.uow_factory,
                clock=resources.clock,
                policy=retention_policy(settings),
            ),
            workers=workers,
            worker_retention=_days(settings.retention.workers_days),
            batch_size=settings.retention.batch_size,
            interval=timedelta(seconds=settings.retention.interval_seconds),
        )
    )
    loops.append(
        gauge_loop(
            ClusterGauges(
                uow_factory=resources.uow_factory, queue=resources.queue, observer=observer
            ),
            interval=timings.gauge_interval,
        )
    )
    if settings.events.retention_days > 0:
        loops.append(
            event_retention_loop(
                EventService(uow_factory=resources.uow_factory, clock=resources.clock),
                keep=timedelta(days=settings.events.retention_days),
                interval=timedelta(seconds=settings.events.prune_interval_seconds),
                batch=settings.events.prune_batch,
                webhooks=build_webhook_store(resources.engine),
            )
        )
    loops.extend(_event_readers(resources, on_stop))
    if task_changes is not None:
        task_changes.subscribe(scheduler.wake)
    if resources.engine.dialect.name == "postgresql":
        statistics = PlannerStatistics(resources.engine)

        async def analyse() -> bool:
            await statistics.refresh()
            return False

        loops.append(PeriodicLoop("planner-statistics", analyse, interval=STATISTICS_INTERVAL))
        listener = TaskChangeListener(resources.engine)

        async def listen() -> bool:
            await listener.listen(scheduler.wake)
            return False

        loops.append(
            PeriodicLoop(
                "task-changes", listen, interval=timedelta(seconds=1), stop_grace=timedelta(0)
            )
        )
    return LoopGroup(loops=loops, observer=observer, on_stop=on_stop)


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


def retention_policy(settings: Settings) -> RetentionPolicy:
    r = settings.retention
    return RetentionPolicy(
        runs=_days(r.runs_days),
        dead_letters=_days(r.dead_letters_days),
        slot_decisions=_days(r.slot_decisions_days),
    )


def _days(days: float) -> timedelta | None:
    """A retention in days from the config; 0 keeps for ever."""
    return timedelta(days=days) if days > 0 else None
