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
from typing import Any, Self

from scheduler_application.ports.unit_of_work import REPOSITORY_NAMES, UnitOfWork, UnitOfWorkFactory

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
    """The wrapped unit of work, unchanged but for a notification after each commit: its
    repositories (the port's :data:`REPOSITORY_NAMES`) are the inner one's."""

    def __init__(self, inner: UnitOfWork, signal: TaskChangeSignal) -> None:
        self._inner = inner
        self._signal = signal

    @property
    def wrapped(self) -> UnitOfWork:
        """The unit of work whose transaction this is (see ``ports.unit_of_work.innermost``)."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name in REPOSITORY_NAMES:
            return getattr(self._inner, name)
        raise AttributeError(name)

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
