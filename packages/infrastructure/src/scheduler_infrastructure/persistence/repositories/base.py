"""What every SQL repository shares: the connection of its unit of work, translated execution,
inserts that report duplicates without spoiling the transaction, and row locking."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Table, UniqueConstraint, and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable, Select

from scheduler_application.errors import AlreadyExists
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.driver_errors import already_exists, translated

ConnectionSource = Callable[[], AsyncConnection]
S = TypeVar("S", bound=Select[Any])


@cache
def unique_keys(table: Table) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``(constraint name, columns)`` of the primary key and every unique constraint or index."""
    keys: list[tuple[str, tuple[str, ...]]] = [
        (str(table.primary_key.name), tuple(c.name for c in table.primary_key.columns))
    ]
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            keys.append((str(constraint.name), tuple(c.name for c in constraint.columns)))
    for index in table.indexes:
        if index.unique:
            keys.append((str(index.name), tuple(c.name for c in index.columns)))
    return tuple(keys)


@cache
def _insert_or_nothing(table: Table, *, postgres: bool) -> Executable:
    """``INSERT … ON CONFLICT DO NOTHING`` for ``table``, built once: the values come as
    parameters, so SQLAlchemy finds its compiled form in the cache instead of building and
    hashing a new statement for every row."""
    dialect = postgresql if postgres else sqlite
    statement: Executable = dialect.insert(table).on_conflict_do_nothing()
    return statement


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")


class SqlRepository:
    """Base of the repositories: bound to the connection its unit of work has open."""

    #: What one row is called in error messages.
    what = "row"

    def __init__(self, connection: ConnectionSource) -> None:
        self._connection = connection

    @property
    def _conn(self) -> AsyncConnection:
        return self._connection()

    @property
    def _postgres(self) -> bool:
        return self._conn.dialect.name == "postgresql"

    async def _execute(
        self, statement: Executable, parameters: Sequence[Mapping[str, Any]] | None = None
    ) -> CursorResult[Any]:
        async with translated(self.what):
            if parameters is None:
                return await self._conn.execute(statement)
            return await self._conn.execute(statement, list(parameters))

    async def _all(self, statement: Executable) -> Sequence[RowMapping]:
        return (await self._execute(statement)).mappings().all()

    async def _all_with(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[RowMapping]:
        """:meth:`_all` of a prebuilt statement with bound parameters."""
        async with translated(self.what):
            result = await self._conn.execute(statement, dict(parameters))
        return result.mappings().all()

    async def _fetch(
        self, prebuilt: driver.Prebuilt, parameters: Mapping[str, Any]
    ) -> Sequence[Any]:
        """The rows of a prebuilt statement, addressable by position and by column name (on
        PostgreSQL it runs on the driver: :mod:`..driver`)."""
        async with translated(self.what):
            return await driver.fetch(self._conn, prebuilt, parameters)

    async def _first(self, statement: Executable) -> RowMapping | None:
        return (await self._execute(statement)).mappings().first()

    async def _scalar(self, statement: Executable) -> Any:
        return (await self._execute(statement)).scalar()

    def _locked(self, statement: S) -> S:
        """``FOR UPDATE SKIP LOCKED`` on PostgreSQL. SQLite has no row locks and needs none:
        every transaction there holds the database's single write lock (``BEGIN IMMEDIATE``)."""
        if self._postgres:
            return statement.with_for_update(skip_locked=True)
        return statement

    async def _insert_new(self, table: Table, row: Mapping[str, Any]) -> None:
        """Insert ``row``; :class:`AlreadyExists` naming the taken field if a unique key clashes.

        ``ON CONFLICT DO NOTHING`` instead of catching the violation keeps the transaction
        usable on PostgreSQL, so a caller may look the existing row up and carry on (idempotent
        triggers do exactly that)."""
        statement = _insert_or_nothing(table, postgres=self._postgres)
        async with translated(self.what):
            result = await self._conn.execute(statement, dict(row))
        if result.rowcount == 0:
            raise await self._clash(table, row)

    async def _clash(self, table: Table, row: Mapping[str, Any]) -> AlreadyExists:
        for name, columns in unique_keys(table):
            if any(row.get(column) is None for column in columns):
                continue
            probe = select(1).where(and_(*(table.c[c] == row[c] for c in columns))).limit(1)
            if await self._scalar(probe) is not None:
                return already_exists(name, what=self.what)
        return already_exists(None, what=self.what)
