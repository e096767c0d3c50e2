"""The dispatcher's reliability loops. Each is safe to run in several dispatchers at once:
the rows they act on are claimed with ``FOR UPDATE SKIP LOCKED`` and every write is
conditional, so two dispatchers never act on the same run twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Unavailable
from scheduler_application.events.log import EventService
from scheduler_application.events.topic import EventTopicRelay
from scheduler_application.events.webhook_delivery import WebhookDispatcher
from scheduler_application.execution.reaper import LeaseReaper
from scheduler_application.execution.workers import WorkerService
from scheduler_application.log_context import log_context
from scheduler_application.operations.gauges import ClusterGauges
from scheduler_application.operations.retention import HistoryRetention
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.webhooks import WebhookStore

logger = logging.getLogger("scheduler.dispatcher")
T = TypeVar("T")
#: How long a stopped loop lets its current step finish before cutting it off.
STOP_GRACE = timedelta(seconds=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopTimings:
    relay_interval: timedelta = timedelta(seconds=0.5)
    reaper_interval: timedelta = timedelta(seconds=5)
    requeue_after: timedelta = timedelta(seconds=60)
    #: A run fired ahead still queued this long after its slot has its broker message
    #: published again (its dispatcher may have died holding it): RunRelay.republish_held,
    #: checked by the relay loop.
    held_past: timedelta = timedelta(seconds=3)
    worker_silence: timedelta = timedelta(seconds=60)
    batch_size: int = 500
    gauge_interval: timedelta = timedelta(seconds=10)


class PeriodicLoop:
    """Calls ``step`` every ``interval``; a step that returns True (a full batch) runs again at
    once. ``wake()`` cuts the wait short. Errors are logged and the loop goes on with backoff,
    so an outage of the database or broker delays work and never kills the dispatcher (and is
    reported to ``observer``, which the :class:`LoopGroup` sets)."""

    observer: RunObserver = NO_OBSERVER

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[bool]],
        *,
        interval: timedelta,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        stop_grace: timedelta = STOP_GRACE,
    ) -> None:
        self.name = name
        self._stop_grace = stop_grace.total_seconds()
        self._step = step
        self._interval = interval.total_seconds()
        self._wake = asyncio.Event()
        self._on_stop = on_stop
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def idle_seconds(self) -> float:
        """How long to wait (unless woken) after a step that left nothing more to do."""
        return self._interval

    async def _tick(self) -> tuple[bool, float]:
        more = await self._step()
        return more, 0.0 if more else await self.idle_seconds()

    async def _finishing(self, work: Awaitable[T]) -> T:
        """Await ``work``; when the loop is stopped (cancelled) meanwhile, let it finish for up
        to ``stop_grace`` first. A step cut off mid-statement can leave a database connection
        with an open transaction behind (SQLite: the write lock), so steps end cleanly. Steps
        that never end by themselves (a listener) take a zero grace."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                if self._stop_grace <= 0:
                    task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=max(self._stop_grace, 5.0))
            raise

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._on_stop is not None:
                await self._on_stop()

    async def _run(self) -> None:
        delay = self._interval
        while True:
            self._wake.clear()
            try:
                more, idle = await self._finishing(self._tick())
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failures += 1
                if isinstance(error, Unavailable):
                    self.observer.dependency_unavailable(error.dependency)
                delay = min(max(delay * 2, self._interval), 10.0)
                logger.warning(
                    "%s failed (%s: %s); retrying in %.1f s",
                    self.name,
                    type(error).__name__,
                    str(error)[:200],
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            delay = self._interval
            if more:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=idle)


def reliability_loops(
    *, relay: RunRelay, reaper: LeaseReaper, workers: WorkerService, timings: LoopTimings
) -> list[PeriodicLoop]:
    batch = timings.batch_size

    async def relay_step() -> bool:
        more = len(await relay.relay_pending(batch)) >= batch
        held = await relay.republish_held(timings.held_past, batch)
        if held:
            logger.warning(
                "published again %d runs fired ahead and still queued %.0f s after their slot",
                len(held),
                timings.held_past.total_seconds(),
            )
        return more or len(held) >= batch

    async def requeue_step() -> bool:
        more = await redispatch()
        republished = await relay.republish_stale_queued(timings.requeue_after, batch)
        if republished:
            logger.warning("republished %d runs left queued too long", len(republished))
        return more or len(republished) >= batch

    async def reaper_step() -> bool:
        settled = await reaper.reap_expired_leases(batch)
        for settlement in settled:
            run = settlement.run
            with log_context(run_id=run.id, task_id=run.task_id, worker_id=run.worker_id):
                logger.warning(
                    "run %s lost its lease (worker %s); %s",
                    run.id,
                    run.worker_id,
                    "retrying" if settlement.retry else "dead-lettered",
                )
        return len(settled) >= batch

    async def offline_step() -> bool:
        gone = await workers.mark_silent_offline(timings.worker_silence)
        for worker in gone:
            with log_context(worker_id=worker.id):
                logger.warning("worker %s (%s) went silent: offline", worker.id, worker.name)
        if gone:
            await redispatch()
        return False

    async def redispatch() -> bool:
        moved = await relay.redispatch_orphaned(batch)
        if moved:
            logger.warning("re-dispatched %d runs waiting on unavailable workers", len(moved))
        return len(moved) >= batch

    return [
        PeriodicLoop("relay", relay_step, interval=timings.relay_interval),
        PeriodicLoop("requeue", requeue_step, interval=timings.requeue_after / 4),
        PeriodicLoop("reaper", reaper_step, interval=timings.reaper_interval),
        PeriodicLoop("worker-liveness", offline_step, interval=timings.reaper_interval),
    ]


def gauge_loop(gauges: ClusterGauges, *, interval: timedelta) -> PeriodicLoop:
    """Samples queue depths and worker counts for the gauges every ``interval``."""

    async def sample() -> bool:
        await gauges.sample()
        return False

    return PeriodicLoop("gauges", sample, interval=interval)


def retention_loop(
    *,
    history: HistoryRetention,
    workers: WorkerService,
    worker_retention: timedelta | None,
    batch_size: int,
    interval: timedelta,
) -> PeriodicLoop:
    """Deletes old history and retires long-offline workers, a batch of each per step; a full
    batch runs the next step at once, so a backlog is worked off in bounded transactions."""

    async def step() -> bool:
        purged = await history.purge(batch_size)
        if purged.runs or purged.decisions:
            logger.info(
                "retention deleted %d runs and %d slot decisions",
                sum(purged.runs.values()),
                purged.decisions,
            )
        more = purged.more
        if worker_retention is not None:
            retirement = await workers.retire_offline(worker_retention, batch_size)
            for worker in retirement.retired:
                with log_context(worker_id=worker.id):
                    logger.info(
                        "retired worker %s (%s), offline since %s",
                        worker.id,
                        worker.name,
                        worker.heartbeat_at.isoformat(),
                    )
            for worker, reason in retirement.kept:
                with log_context(worker_id=worker.id):
                    logger.warning(
                        "worker %s (%s) is kept for now: %s", worker.id, worker.name, reason
                    )
            more = more or len(retirement.retired) >= batch_size
        return more

    return PeriodicLoop("retention", step, interval=interval)


def event_retention_loop(
    events: EventService,
    *,
    keep: timedelta,
    interval: timedelta,
    batch: int,
    webhooks: WebhookStore | None = None,
) -> PeriodicLoop:
    """Deletes event-log entries (and webhook delivery-log rows) older than ``keep``,
    ``batch`` per transaction, every ``interval``. Several dispatchers may run it: a row
    deleted twice is simply gone."""

    async def prune() -> bool:
        deleted = await events.prune(older_than=keep, batch=batch)
        if deleted:
            logger.info("event log: %d entries older than %s deleted", deleted, keep)
        if webhooks is not None:
            before = datetime.now(UTC) - keep
            while await webhooks.prune_deliveries(before=before, limit=batch) >= batch:
                pass
        return False

    return PeriodicLoop("event-retention", prune, interval=interval)


def webhook_loop(webhooks: WebhookDispatcher, *, interval: timedelta) -> PeriodicLoop:
    """Delivers the event log to webhook subscriptions (one dispatcher at a time: a lease).
    Its own loop, so a slow or hanging receiver delays only its own deliveries."""
    return PeriodicLoop("webhooks", webhooks.step, interval=interval, on_stop=webhooks.release)


def event_topic_loop(relay: EventTopicRelay, *, interval: timedelta) -> PeriodicLoop:
    """Publishes the event log to the broker topic (one dispatcher at a time: a lease)."""
    return PeriodicLoop("event-topic", relay.step, interval=interval, on_stop=relay.aclose)
