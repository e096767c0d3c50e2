"""An in-process signal that task definitions changed, so the scheduler wakes up at once.

The dispatcher sleeps until the earliest ``next_run_at``; a task created or edited meanwhile may
be due sooner. When the API (or anything that changes tasks) runs in the same process as the
dispatcher, the composition root wraps the unit-of-work factory it gives :class:`TaskService`
with :meth:`TaskChangeSignal.watch` and subscribes the scheduler loop's ``wake``: every commit of
those units of work then wakes the scheduler. Across processes the database does the same job
(PostgreSQL ``NOTIFY``, see the infrastructure's task-change listener).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from scheduler_application.ports.repositories import (
    ApiKeyRepository,
    BulkOperationRepository,
    CircuitRepository,
    DecisionRepository,
    QueueSettingsRepository,
    RefreshTokenRepository,
    RunEventRepository,
    RunRepository,
    SharedLimitRepository,
    TaskRepository,
    TeamRepository,
    TemplateRepository,
    UserRepository,
    WorkerRepository,
)
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

logger = logging.getLogger("scheduler.task_changes")

Listener = Callable[[], None]


class TaskChangeSignal:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.notified = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def notify(self) -> None:
        """Call every listener; one that fails is logged and does not stop the others."""
        self.notified += 1
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("task change listener %r failed", listener)

    def watch(self, uow_factory: UnitOfWorkFactory) -> UnitOfWorkFactory:
        """A factory whose units of work :meth:`notify` after each successful commit."""

        def factory() -> UnitOfWork:
            return _NotifyingUnitOfWork(uow_factory(), self)

        return factory


class _NotifyingUnitOfWork:
    """The wrapped unit of work, unchanged but for a notification after each commit."""

    def __init__(self, inner: UnitOfWork, signal: TaskChangeSignal) -> None:
        self._inner = inner
        self._signal = signal
        self.tasks: TaskRepository = inner.tasks
        self.runs: RunRepository = inner.runs
        self.events: RunEventRepository = inner.events
        self.decisions: DecisionRepository = inner.decisions
        self.workers: WorkerRepository = inner.workers
        self.queue_settings: QueueSettingsRepository = inner.queue_settings
        self.users: UserRepository = inner.users
        self.api_keys: ApiKeyRepository = inner.api_keys
        self.refresh_tokens: RefreshTokenRepository = inner.refresh_tokens
        self.bulk_operations: BulkOperationRepository = inner.bulk_operations
        self.templates: TemplateRepository = inner.templates
        self.limits: SharedLimitRepository = inner.limits
        self.circuits: CircuitRepository = inner.circuits
        self.teams: TeamRepository = inner.teams

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._inner.commit()
        self._signal.notify()

    async def rollback(self) -> None:
        await self._inner.rollback()
