"""Aggregate views for operators: queue depths and throughput, run counts, worker counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from scheduler_application.accounts.access import Principal, ensure_can_read_tasks
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.repositories import QueueActivity
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import WorkerStatus

logger = logging.getLogger("scheduler.status")

RATE_WINDOW = timedelta(minutes=1)
DEPTH_TIMEOUT = timedelta(seconds=2)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    """One queue: the broker's depth (None when the broker did not answer) and the database's
    view of its runs, with how many were created and finished within ``window``."""

    name: str
    depth: int | None
    activity: QueueActivity
    window: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemCounts:
    runs_by_status: dict[RunStatus, int]
    workers_by_status: dict[WorkerStatus, int]


class StatusService:
    def __init__(self, *, uow_factory: UnitOfWorkFactory, clock: Clock, queue: RunQueue) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._queue = queue

    async def queues(
        self,
        *,
        principal: Principal,
        window: timedelta = RATE_WINDOW,
        only: str | None = None,
        also: Iterable[str] = (),
    ) -> list[QueueStats]:
        """Every known queue: named by a task, consumed by a worker, holding runs, with stored
        settings, or in ``also`` (configured ones); ``only``: just that one, known or not."""
        ensure_can_read_tasks(principal)
        since = self._clock.now() - window
        async with self._uow_factory() as uow:
            names = set(await uow.tasks.queue_names())
            for worker in await uow.workers.list():
                if worker.status is not WorkerStatus.OFFLINE:
                    names.update(worker.queues)
            names.update(s.name for s in await uow.queue_settings.list())
            activity = {a.queue: a for a in await uow.runs.queue_activity(since)}
        names.update(activity)
        names.update(also)
        ordered = [only] if only is not None else sorted(names)
        depths = await asyncio.gather(*(self._depth(name) for name in ordered))
        return [
            QueueStats(
                name=name,
                depth=depth,
                activity=activity.get(name, QueueActivity(queue=name)),
                window=window,
            )
            for name, depth in zip(ordered, depths, strict=True)
        ]

    async def counts(self, *, principal: Principal) -> SystemCounts | None:
        """Instance-wide counts, for roles that see every owner's runs (None for the others)."""
        ensure_can_read_tasks(principal)
        if not principal.role.sees_all_tasks:
            return None
        async with self._uow_factory() as uow:
            runs = await uow.runs.count_by_status()
            workers = await uow.workers.list()
        by_status: dict[WorkerStatus, int] = dict.fromkeys(WorkerStatus, 0)
        for worker in workers:
            by_status[worker.status] += 1
        return SystemCounts(runs_by_status=runs, workers_by_status=by_status)

    async def _depth(self, name: str) -> int | None:
        try:
            async with asyncio.timeout(DEPTH_TIMEOUT.total_seconds()):
                return await self._queue.depth(name)
        except Exception as error:  # a broker problem must not break the overview
            logger.warning("depth of queue %r unavailable: %s", name, type(error).__name__)
            return None
