"""The dispatcher's composition root: the only module of the dispatcher that knows the adapters."""

from __future__ import annotations

from datetime import timedelta

from scheduler_application.reaper import LeaseReaper
from scheduler_application.relay import RunRelay
from scheduler_application.workers import WorkerService
from scheduler_dispatcher.loops import LoopTimings, reliability_loops
from scheduler_dispatcher.service import Dispatcher
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.resources import Resources, open_resources
from scheduler_infrastructure.startup import StartupError, prepare

__all__ = ["StartupError", "build_dispatcher", "load", "open_resources"]


def load() -> Settings:
    return prepare("dispatcher", standalone=True)


def build_dispatcher(resources: Resources) -> Dispatcher:
    settings = resources.settings
    d = settings.dispatcher
    timings = LoopTimings(
        relay_interval=timedelta(seconds=d.relay_interval_seconds),
        reaper_interval=timedelta(seconds=d.reaper_interval_seconds),
        requeue_after=timedelta(seconds=d.requeue_after_seconds),
        worker_silence=timedelta(seconds=max(3 * settings.worker.heartbeat_seconds, 30)),
        batch_size=d.batch_size,
    )
    uow, clock = resources.uow_factory, resources.clock
    return Dispatcher(
        loops=reliability_loops(
            relay=RunRelay(uow_factory=uow, clock=clock, queue=resources.queue),
            reaper=LeaseReaper(uow_factory=uow, clock=clock),
            workers=WorkerService(uow_factory=uow, clock=clock),
            timings=timings,
        )
    )
