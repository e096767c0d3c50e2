"""The dispatcher's reliability loops. Each is safe to run in several dispatchers at once:
the rows they act on are claimed with ``FOR UPDATE SKIP LOCKED`` and every write is
conditional, so two dispatchers never act on the same run twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from scheduler_application.reaper import LeaseReaper
from scheduler_application.relay import RunRelay
from scheduler_application.workers import WorkerService

logger = logging.getLogger("scheduler.dispatcher")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopTimings:
    relay_interval: timedelta = timedelta(seconds=0.5)
    reaper_interval: timedelta = timedelta(seconds=5)
    requeue_after: timedelta = timedelta(seconds=60)
    worker_silence: timedelta = timedelta(seconds=60)
    batch_size: int = 500


class PeriodicLoop:
    """Calls ``step`` every ``interval``; a step that returns True (a full batch) runs again at
    once. ``wake()`` cuts the wait short. Errors are logged and the loop goes on with backoff,
    so an outage of the database or broker delays work and never kills the dispatcher."""

    def __init__(
        self, name: str, step: Callable[[], Awaitable[bool]], *, interval: timedelta
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval.total_seconds()
        self._wake = asyncio.Event()
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        delay = self._interval
        while True:
            self._wake.clear()
            try:
                more = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.failures += 1
                delay = min(max(delay * 2, self._interval), 10.0)
                logger.warning(
                    "%s failed (%s: %s); retrying in %.1f s",
                    self.name, type(error).__name__, str(error)[:200], delay,
                )
                await asyncio.sleep(delay)
                continue
            delay = self._interval
            if more:
                await asyncio.sleep(0)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass


def reliability_loops(
    *, relay: RunRelay, reaper: LeaseReaper, workers: WorkerService, timings: LoopTimings
) -> list[PeriodicLoop]:
    batch = timings.batch_size

    async def relay_step() -> bool:
        return len(await relay.relay_pending(batch)) >= batch

    async def requeue_step() -> bool:
        republished = await relay.republish_stale_queued(timings.requeue_after, batch)
        if republished:
            logger.warning("republished %d runs left queued too long", len(republished))
        return len(republished) >= batch

    async def reaper_step() -> bool:
        settled = await reaper.reap_expired_leases(batch)
        for settlement in settled:
            logger.warning(
                "run %s lost its lease (worker %s); %s",
                settlement.run.id,
                settlement.run.worker_id,
                "retrying" if settlement.retry else "dead-lettered",
            )
        return len(settled) >= batch

    async def offline_step() -> bool:
        for worker in await workers.mark_silent_offline(timings.worker_silence):
            logger.warning("worker %s (%s) went silent: offline", worker.id, worker.name)
        return False

    return [
        PeriodicLoop("relay", relay_step, interval=timings.relay_interval),
        PeriodicLoop("requeue", requeue_step, interval=timings.requeue_after / 4),
        PeriodicLoop("reaper", reaper_step, interval=timings.reaper_interval),
        PeriodicLoop("worker-liveness", offline_step, interval=timings.reaper_interval),
    ]
