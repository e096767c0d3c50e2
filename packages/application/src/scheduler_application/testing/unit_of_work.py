"""The in-memory unit of work: one :class:`Transaction` and the repositories bound to it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_application.testing.repositories import (
    InMemoryApiKeyRepository,
    InMemoryBulkOperationRepository,
    InMemoryCircuitRepository,
    InMemoryDecisionRepository,
    InMemoryQueueSettingsRepository,
    InMemoryRefreshTokenRepository,
    InMemoryRunEventRepository,
    InMemoryRunRepository,
    InMemorySharedLimitRepository,
    InMemoryTaskRepository,
    InMemoryTeamRepository,
    InMemoryTemplateRepository,
    InMemoryUserRepository,
    InMemoryWorkerRepository,
)
from scheduler_application.testing.store import InMemoryStore, Transaction


class InMemoryUnitOfWork(UnitOfWork):
    """Rolls back on leaving ``async with`` unless committed; counts its commits and rollbacks.

    Opening and committing yield to the event loop, as a real round trip would, so use cases
    run together with ``asyncio.gather`` interleave and their races are exercised.
    """

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store
        self.commits = 0
        self.rollbacks = 0
        self._tx: Transaction | None = None
        self._on_commit: list[Callable[[], None]] = []
        self.tasks = InMemoryTaskRepository(self._current)
        self.runs = InMemoryRunRepository(self._current)
        self.events = InMemoryRunEventRepository(self._current)
        self.decisions = InMemoryDecisionRepository(self._current)
        self.workers = InMemoryWorkerRepository(self._current)
        self.queue_settings = InMemoryQueueSettingsRepository(self._current)
        self.users = InMemoryUserRepository(self._current)
        self.api_keys = InMemoryApiKeyRepository(self._current)
        self.refresh_tokens = InMemoryRefreshTokenRepository(self._current)
        self.bulk_operations = InMemoryBulkOperationRepository(self._current)
        self.templates = InMemoryTemplateRepository(self._current)
        self.limits = InMemorySharedLimitRepository(self._current)
        self.circuits = InMemoryCircuitRepository(self._current)
        self.teams = InMemoryTeamRepository(self._current)

    def _current(self) -> Transaction:
        if self._tx is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        return self._tx

    async def __aenter__(self) -> Self:
        if self._tx is not None:
            raise RuntimeError("this unit of work is already open")
        await asyncio.sleep(0)
        self._tx = Transaction(self.store, self.store.next_serial())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.rollback()
        finally:
            self._tx = None

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the open transaction commits; a rollback forgets it. (How
        the tests' ``InMemoryTransactionalRunQueue`` (``tests/recording_queue.py``) makes its
        staged messages appear exactly at the commit.)"""
        self._current()
        self._on_commit.append(callback)

    async def commit(self) -> None:
        tx = self._current()
        await asyncio.sleep(0)
        tx.commit()
        self.commits += 1
        callbacks, self._on_commit = self._on_commit, []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        tx = self._current()
        self._on_commit.clear()
        if tx.has_work():
            self.rollbacks += 1
        tx.rollback()


class InMemoryUnitOfWorkFactory:
    """``uow_factory`` for use cases: a new unit of work per call, all over one store."""

    def __init__(self, store: InMemoryStore | None = None) -> None:
        self.store = store if store is not None else InMemoryStore()
        self.created: list[InMemoryUnitOfWork] = []

    def __call__(self) -> InMemoryUnitOfWork:
        uow = InMemoryUnitOfWork(self.store)
        self.created.append(uow)
        return uow

    @property
    def commits(self) -> int:
        return self.store.commits
