"""Runs written ``pending`` for tests of the relay loop's own passes (unit and integration)."""

from __future__ import annotations

from datetime import timedelta

from scheduler_application.accounts.access import Principal
from scheduler_application.errors import AlreadyExists
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.runs.service import MANUAL_KEY_PREFIX
from scheduler_domain.run import RunTrigger, TaskRun


class PendingRuns:
    """Manual runs written ``pending``, as the relay loop finds them (a gate held them, or the
    process that created them stopped before queueing them): the input of tests of the relay
    loop's own passes. A :class:`RunService` queues the runs it creates at once."""

    def __init__(self, *, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    async def trigger(
        self, task_id: str, *, principal: Principal, idempotency_key: str | None = None
    ) -> TaskRun:
        now = self._clock.now()
        key = None if idempotency_key is None else MANUAL_KEY_PREFIX + idempotency_key
        async with self._uow_factory() as uow:
            task = await uow.tasks.get(task_id)
            assert task is not None
            if key is not None:
                existing = await uow.runs.get_by_idempotency_key(task.id, key)
                if existing is not None:
                    return existing
            run = TaskRun.create(
                task, trigger=RunTrigger.MANUAL, logical_time=now, now=now, idempotency_key=key
            )
            while True:  # the next free logical time, as RunService.trigger does
                try:
                    await uow.runs.add(run, events=[run.created_event(actor=principal.actor)])
                    break
                except AlreadyExists:
                    run.scheduled_for += timedelta(microseconds=1)
            await uow.commit()
        return run
