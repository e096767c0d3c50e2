"""The dispatcher's scheduling loops: firing due schedules, and resolving dependencies.

The scheduler loop sleeps until the earliest ``next_run_at`` (at most ``max_sleep``), and wakes
early through :meth:`SchedulerLoop.wake`: the composition root connects it to whatever learns of
task changes (an in-process :class:`~scheduler_application.task_changes.TaskChangeSignal`, or
PostgreSQL ``LISTEN``). A full batch runs the next one at once. Both loops are safe with several
dispatchers: their rows are claimed ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from scheduler_application.runs.dependencies import DependencyResolver, ResolutionReport
from scheduler_application.runs.scheduling import FiringReport, ScheduleFiring
from scheduler_dispatcher.loops import PeriodicLoop

logger = logging.getLogger("scheduler.dispatcher")

#: The shortest sleep when a task is already due yet was not fired (another dispatcher holds
#: it): enough not to spin while it commits.
MIN_SLEEP = timedelta(milliseconds=20)


class SchedulerLoop(PeriodicLoop):
    """Fires due tasks (the observer the firing was given counts what it did)."""

    def __init__(
        self,
        firing: ScheduleFiring,
        *,
        batch_size: int,
        max_sleep: timedelta,
        min_sleep: timedelta = MIN_SLEEP,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__("scheduler", self._fire, interval=max_sleep, on_stop=on_stop)
        self._firing = firing
        self._batch = batch_size
        self._max_sleep = max_sleep.total_seconds()
        self._min_sleep = min_sleep.total_seconds()
        self._fired_now = False

    async def _fire(self) -> bool:
        report: FiringReport = await self._firing.fire_due_tasks(self._batch)
        self._fired_now = report.tasks > 0
        if report.fired or report.skipped:
            logger.debug(
                "fired %d runs of %d tasks; skipped %s",
                report.fired,
                report.tasks,
                dict(report.skipped) or "none",
            )
        return report.tasks >= self._batch

    async def idle_seconds(self) -> float:
        wait = await self._firing.seconds_until_due(at_most=self._max_sleep)
        if wait <= 0 and not self._fired_now:
            return self._min_sleep  # due, but held by another dispatcher
        return wait


def dependency_loop(
    resolver: DependencyResolver, *, interval: timedelta, batch_size: int
) -> PeriodicLoop:
    async def resolve() -> bool:
        report: ResolutionReport = await resolver.resolve_finished(batch_size)
        if report.created or report.skipped:
            logger.debug(
                "dependencies: %d runs created, skipped %s",
                len(report.created),
                dict(report.skipped) or "none",
            )
        return report.resolved >= batch_size

    return PeriodicLoop("dependencies", resolve, interval=interval)
