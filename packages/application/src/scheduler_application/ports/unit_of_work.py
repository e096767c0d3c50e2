from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

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


class NeedsTransaction(Exception):
    """A unit of work from a :data:`StatementUnitOfWorkFactory` was asked for a statement that
    needs a transaction (a locking read, a write that is not atomic on its own); it was not
    sent. Raised before anything of the kind was written: the use case does its work again in
    a transactional unit of work."""


class Repositories(Protocol):
    """The repositories of a unit of work: the one list of them. The units of work (SQL, in
    memory) implement :class:`UnitOfWork` explicitly, so each only builds its own."""

    tasks: TaskRepository
    runs: RunRepository
    events: RunEventRepository
    decisions: DecisionRepository
    workers: WorkerRepository
    queue_settings: QueueSettingsRepository
    users: UserRepository
    api_keys: ApiKeyRepository
    refresh_tokens: RefreshTokenRepository
    bulk_operations: BulkOperationRepository
    templates: TemplateRepository
    limits: SharedLimitRepository
    circuits: CircuitRepository
    teams: TeamRepository


#: The names of :class:`Repositories`, for what hands a unit of work's repositories on.
REPOSITORY_NAMES: tuple[str, ...] = tuple(Repositories.__annotations__)


class UnitOfWork(Repositories, Protocol):
    """One transaction and the repositories bound to it.

    ``async with uow:`` opens the transaction; leaving the block rolls back whatever was not
    committed, so a use case that raises half-way leaves no trace. ``commit()`` makes the work
    durable; after it the same object may be used for a further transaction.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


def innermost(uow: UnitOfWork) -> UnitOfWork:
    """The unit of work a wrapper (one that adds behaviour around the same transaction, such as
    the task-change signal's) stands for: what an adapter that writes in the transaction itself
    (the database queue's ``publish_within``) must look at. A wrapper names it ``wrapped``."""
    while True:
        wrapped = getattr(uow, "wrapped", None)
        if wrapped is None:
            return uow
        uow = wrapped


#: Builds a fresh unit of work per use-case call.
UnitOfWorkFactory = Callable[[], UnitOfWork]
#: Builds a unit of work for reads only: the same repositories, but no transaction where the
#: database allows it (one round trip per statement, each seeing what was committed when it
#: started). Never commit in one; a use case that writes uses a ``UnitOfWorkFactory``. Any
#: ``UnitOfWorkFactory`` is a valid (transactional) stand-in.
ReadUnitOfWorkFactory = Callable[[], UnitOfWork]
#: Builds a unit of work in which each statement commits on its own, with no ``BEGIN`` or
#: ``COMMIT`` round trip where the database allows it: reads, and the writes a repository makes
#: atomic in one statement (``RunRepository.add_new_many``: runs, their events, and the queue's
#: messages written alongside). Any other statement — a locking read, any other write — raises
#: :class:`NeedsTransaction` before it is sent. ``rollback()`` undoes nothing already written:
#: a use case counts on what such a unit of work wrote being durable as the write returned (a
#: transactional ``UnitOfWorkFactory`` is no stand-in; where the database has no autocommit
#: worth having, the composition root passes none). ``commit()`` is still called at the end.
StatementUnitOfWorkFactory = Callable[[], UnitOfWork]
