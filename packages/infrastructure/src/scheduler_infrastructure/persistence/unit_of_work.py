"""The SQL unit of work: one connection, one transaction at a time, every repository on it.

A *read* unit of work (``SqlUnitOfWorkFactory.reads``) opens no transaction it does not need:
on PostgreSQL its connection is in autocommit, so a read is the statement's one round trip
(no ``BEGIN`` before it, no ``ROLLBACK`` after), each statement seeing what was committed when
it started; on SQLite (no network) it begins a deferred transaction, a consistent snapshot that
takes no write lock. It is for reads only: a write there is not atomic with anything else.

A *statement* unit of work (``SqlUnitOfWorkFactory.statements``, the port's
``StatementUnitOfWorkFactory``) is autocommit on PostgreSQL too, and also runs the writes that
are atomic on their own (``driver.Prebuilt(..., standalone=True)``: new runs with their events
and messages): a trigger group is then its reads and one insert, with no ``BEGIN`` and no
``COMMIT`` round trip. Any other statement raises ``NeedsTransaction`` before it is sent (the
connection it hands out checks each one; ``driver.fetch`` checks prebuilt ones). On SQLite it
is an ordinary unit of work, and ``statement_units`` is None (the composition roots pass no
statement units of work there).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler_application.ports.unit_of_work import (
    NeedsTransaction,
    StatementUnitOfWorkFactory,
    UnitOfWork,
)
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.engine import READ_ONLY_OPTION, STATEMENT_UNIT_OPTION
from scheduler_infrastructure.persistence.kept_connections import (
    ConnectionShelf,
    give_back,
    shelf_for,
)
from scheduler_infrastructure.persistence.repositories import (
    SqlApiKeyRepository,
    SqlBulkOperationRepository,
    SqlCircuitRepository,
    SqlDecisionRepository,
    SqlQueueSettingsRepository,
    SqlRefreshTokenRepository,
    SqlRunEventRepository,
    SqlRunRepository,
    SqlSharedLimitRepository,
    SqlTaskRepository,
    SqlTeamRepository,
    SqlTemplateRepository,
    SqlUserRepository,
    SqlWorkerRepository,
)
from scheduler_infrastructure.persistence.repositories.queue_settings import ReadAhead


class _StatementUnitConnection:
    """The connection of a statement unit of work: it runs what may run in autocommit (a
    plain read, a standalone write) and refuses anything else before it is sent; the rest is
    the connection's own."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        driver.refuse_outside_transaction(statement)
        return await self._connection.execute(statement, *args, **kwargs)

    async def scalar(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        driver.refuse_outside_transaction(statement)
        return await self._connection.scalar(statement, *args, **kwargs)

    async def scalars(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        driver.refuse_outside_transaction(statement)
        return await self._connection.scalars(statement, *args, **kwargs)

    async def stream(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        driver.refuse_outside_transaction(statement)
        return await self._connection.stream(statement, *args, **kwargs)

    def begin_nested(self) -> Any:
        raise NeedsTransaction("needs a transaction: a savepoint")

    async def exec_driver_sql(self, *_: Any, **__: Any) -> Any:
        raise NeedsTransaction("needs a transaction: SQL that SQLAlchemy did not build")

    async def run_sync(self, *_: Any, **__: Any) -> Any:
        raise NeedsTransaction("needs a transaction: whatever a function may run")


class SqlUnitOfWork(UnitOfWork):
    """``async with uow:`` checks a connection out of the pool; leaving the block rolls back
    whatever was not committed and returns the connection.

    The transaction begins with the first statement (on SQLite that is when the write lock is
    taken), so a unit of work that only waits holds nothing. After ``commit()`` the next
    statement begins a fresh transaction on the same connection.
    """

    def __init__(self, engine: AsyncEngine, *, shelf: ConnectionShelf | None = None) -> None:
        """``shelf``: where an autocommit unit of work takes its connection from and puts it
        back (see :mod:`.kept_connections`); None: the engine's pool."""
        self._engine = engine
        self._shelf = shelf
        self._connection: AsyncConnection | None = None
        #: What the repositories get: the connection, or its statement-unit guard.
        self._handed: AsyncConnection | None = None
        #: Queue settings read along with tasks in the open transaction (forgotten at its end).
        self._read_ahead = ReadAhead()

    # The repositories are made on first use (``__getattr__``): most units of work use one or
    # two of the fourteen, and the API opens one per request.
    tasks: SqlTaskRepository
    runs: SqlRunRepository
    events: SqlRunEventRepository
    decisions: SqlDecisionRepository
    workers: SqlWorkerRepository
    queue_settings: SqlQueueSettingsRepository
    users: SqlUserRepository
    api_keys: SqlApiKeyRepository
    refresh_tokens: SqlRefreshTokenRepository
    bulk_operations: SqlBulkOperationRepository
    templates: SqlTemplateRepository
    limits: SqlSharedLimitRepository
    circuits: SqlCircuitRepository
    teams: SqlTeamRepository

    def __getattr__(self, name: str) -> Any:
        make = _REPOSITORIES.get(name)
        if make is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        repository = make(self)
        setattr(self, name, repository)
        return repository

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def connection(self) -> AsyncConnection:
        """The open transaction's connection, for adapters that write in the same transaction
        (the postgres queue's in-transaction publish)."""
        return self._current()

    def _current(self) -> AsyncConnection:
        if self._handed is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        return self._handed

    async def __aenter__(self) -> Self:
        if self._connection is not None:
            raise RuntimeError("this unit of work is already open")
        async with translated():
            if self._shelf is not None:
                connection = await self._shelf.take()
            else:
                connection = await self._engine.connect()
        self._connection = connection
        self._handed = connection
        if driver.in_statement_unit(connection):
            # Duck-typed: the guard passes everything else through to the connection.
            self._handed = cast(AsyncConnection, _StatementUnitConnection(connection))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        self._handed = None
        self._read_ahead.clear()
        if connection is None:
            return
        try:
            async with translated():
                if self._shelf is not None:
                    await self._shelf.put(connection, clean=exc is None)
                else:
                    await give_back(connection)
        except Exception:
            # A dead connection cannot roll back (the server already has); never let that
            # hide the exception that is leaving the block.
            if exc is None:
                raise

    def _own(self) -> AsyncConnection:
        """The connection itself (not the statement unit's guard): for commit and rollback."""
        if self._connection is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        return self._connection

    async def commit(self) -> None:
        connection = self._own()
        self._read_ahead.clear()
        async with translated():
            await driver.commit(connection)

    async def rollback(self) -> None:
        connection = self._own()
        self._read_ahead.clear()
        async with translated():
            await connection.rollback()


_REPOSITORIES: dict[str, Callable[[SqlUnitOfWork], Any]] = {
    "tasks": lambda uow: SqlTaskRepository(uow._current, read_ahead=uow._read_ahead),
    "runs": lambda uow: SqlRunRepository(uow._current),
    "events": lambda uow: SqlRunEventRepository(uow._current),
    "decisions": lambda uow: SqlDecisionRepository(uow._current),
    "workers": lambda uow: SqlWorkerRepository(uow._current),
    "queue_settings": lambda uow: SqlQueueSettingsRepository(
        uow._current, read_ahead=uow._read_ahead
    ),
    "users": lambda uow: SqlUserRepository(uow._current),
    "api_keys": lambda uow: SqlApiKeyRepository(uow._current),
    "refresh_tokens": lambda uow: SqlRefreshTokenRepository(uow._current),
    "bulk_operations": lambda uow: SqlBulkOperationRepository(uow._current),
    "templates": lambda uow: SqlTemplateRepository(uow._current),
    "limits": lambda uow: SqlSharedLimitRepository(uow._current),
    "circuits": lambda uow: SqlCircuitRepository(uow._current),
    "teams": lambda uow: SqlTeamRepository(uow._current),
}


def read_options(engine: AsyncEngine) -> dict[str, object]:
    """The connection options of a read unit of work on ``engine``'s database."""
    if engine.dialect.name == "sqlite":
        return {READ_ONLY_OPTION: True}
    return {"isolation_level": "AUTOCOMMIT"}


def statement_options(engine: AsyncEngine) -> dict[str, object]:
    """The connection options of a statement unit of work on ``engine``'s database (none on
    SQLite: an ordinary unit of work there)."""
    if engine.dialect.name == "sqlite":
        return {}
    return {"isolation_level": "AUTOCOMMIT", STATEMENT_UNIT_OPTION: True}


class SqlUnitOfWorkFactory:
    """The ``UnitOfWorkFactory`` of the composition roots: a new unit of work per call;
    ``reads`` makes the read-only ones."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # The same pool; its connections are set up for reads as they are checked out.
        self._read_engine = engine.execution_options(**read_options(engine))
        self._statement_engine = engine.execution_options(**statement_options(engine))
        # Autocommit units of work keep their connections between them when the process keeps
        # connections (``kept_connections``, PostgreSQL only): no pool round per read.
        self._read_shelf = shelf_for(engine, self._read_engine)
        self._statement_shelf = shelf_for(engine, self._statement_engine)

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)

    def reads(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._read_engine, shelf=self._read_shelf)

    def statements(self) -> SqlUnitOfWork:
        """A statement unit of work (see the module); on SQLite an ordinary one."""
        return SqlUnitOfWork(self._statement_engine, shelf=self._statement_shelf)

    @property
    def statement_units(self) -> StatementUnitOfWorkFactory | None:
        """The port's ``StatementUnitOfWorkFactory`` on PostgreSQL (:meth:`statements`); None
        on SQLite, where a write is not durable before its transaction commits (and saves
        no network round trip)."""
        return self.statements if self.engine.dialect.name == "postgresql" else None
