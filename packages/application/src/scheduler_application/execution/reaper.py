"""The reaper: attempts whose worker stopped renewing the lease are lost, then retried.

A worker that was only paused (GC, network partition) and comes back finds its fencing token
stale: its heartbeat is told to stop and its outcome is refused, so the retry's result stands.
"""

from __future__ import annotations

import random

from scheduler_application.execution.retries import Settlement, settle_failed_attempt
from scheduler_application.observation import observe_settlement
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.status import RunStatus

REAPER_ACTOR = "reaper"
DEFAULT_BATCH = 100


class LeaseReaper:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        rng: random.Random | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._rng = rng
        self._observer = observer

    async def reap_expired_leases(self, limit: int = DEFAULT_BATCH) -> list[Settlement]:
        """Mark up to ``limit`` running attempts with an expired lease ``lost``, each with its
        retry or dead letter, in one transaction."""
        now = self._clock.now()
        settled: list[Settlement] = []
        async with self._uow_factory() as uow:
            for run in await uow.runs.expired_leases(now, limit=limit):
                read_version = run.version
                await uow.events.add(run.lose(now=now))
                task = await uow.tasks.get(run.task_id)
                retry = await settle_failed_attempt(
                    uow, run, task=task, now=now, actor=REAPER_ACTOR, rng=self._rng
                )
                await uow.runs.update(run, expected_version=read_version)
                settled.append(Settlement(run, retry))
            if settled:
                await uow.commit()
        for settlement in settled:
            self._observer.lease_expired()
            observe_settlement(self._observer, settlement, outcome=RunStatus.LOST)
        return settled
