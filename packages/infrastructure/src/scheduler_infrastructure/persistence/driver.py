"""Prebuilt statements run by asyncpg itself, on the unit of work's own connection.

SQLAlchemy's execution path costs the calling process about three times what asyncpg's does
for the same statement (``scripts/bench_read_path.py``: a primary-key read through
``AsyncConnection.execute`` against a ``fetch`` on its driver connection). The hot statements
of the workers, the trigger path and the queue are built once, as :class:`Prebuilt`, so on
PostgreSQL they skip that path: a prebuilt statement is compiled once (SQLAlchemy's own
compiler, so the SQL and its ``$n`` placeholders are exactly what SQLAlchemy would send), and
:func:`fetch` runs it with asyncpg's ``fetch`` on the connection the unit of work holds — the
same pool, the same transaction, begun as SQLAlchemy begins it — and hands back asyncpg's
records (keyed by column name and by position, like a row mapping and a row at once).

Nothing else changes: bind processors of typed parameters run (a naive datetime is still
refused), errors come back as SQLAlchemy's exception types (so
:func:`~scheduler_infrastructure.persistence.driver_errors.translated` reads them as before),
and results are the values SQLAlchemy would have returned, because the dialect sets asyncpg's
codecs (JSON decoded, timestamps aware UTC) and :func:`_check_result_types` refuses statements
whose result columns need a conversion asyncpg does not make. Where SQLAlchemy has to see every
statement — an engine with execution events (OpenTelemetry's SQLAlchemy instrumentation),
``echo``, SQLite — the statement goes through SQLAlchemy unchanged.

:func:`commit` ends the unit of work's transaction the same way: asyncpg's ``COMMIT`` on the
adapter's transaction, then SQLAlchemy's bookkeeping, with nothing left for it to send.

It leans on the asyncpg adapter's transaction bookkeeping (``_transaction``,
``_start_transaction``, ``_call_and_discard``, ``_execute_mutex``, ``_handle_exception``):
pinned in ``uv.lock`` and covered by ``tests/integration/persistence/test_driver_path.py``,
which fails if a SQLAlchemy upgrade moves them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ARRAY, JSON, Boolean, Float, Integer, String, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement, CompoundSelect, Executable, Select
from sqlalchemy.types import NullType, TypeEngine

from scheduler_application.ports.unit_of_work import NeedsTransaction
from scheduler_infrastructure.persistence.column_types import UTCDateTime
from scheduler_infrastructure.persistence.engine import STATEMENT_UNIT_OPTION

#: Result column types whose values asyncpg already returns as SQLAlchemy would: strings,
#: integers, booleans, floats (``double precision``), JSON (decoded by the dialect's codec),
#: arrays of those, and instants (asyncpg decodes ``timestamptz`` as aware UTC, which is
#: what ``UTCDateTime`` returns). Untyped columns (a bare ``text()``) are not converted by
#: SQLAlchemy either.
_PASSED_THROUGH: tuple[type[TypeEngine[Any]], ...] = (
    String,
    Integer,
    Boolean,
    JSON,
    ARRAY,
    UTCDateTime,
    NullType,
)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    #: ``(position, processor)`` of the parameters SQLAlchemy would convert before binding.
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = [params[name] for name in self.names]
        for position, process in self.processors:
            values[position] = process(values[position])
        return values


class Prebuilt:
    """A statement built once (a module constant, or cached per shape) and run by
    :func:`fetch`; compiled for PostgreSQL on its first use there. ``standalone``: a write
    that is atomic on its own (one statement), which a statement unit of work may run in
    autocommit (plain reads may run there anyway: :func:`runs_alone`)."""

    __slots__ = ("_compiled", "standalone", "statement")

    def __init__(self, statement: Executable, *, standalone: bool = False) -> None:
        self.statement = statement
        self.standalone = standalone or runs_alone(statement)
        if self.standalone:
            _STANDALONE.add(statement)
        self._compiled: _Compiled | None = None

    def compiled(self, dialect: Dialect) -> _Compiled:
        if self._compiled is None:
            self._compiled = _compile(self.statement, dialect)
        return self._compiled


def prebuilt_text(sql: str) -> Prebuilt:
    """``Prebuilt(text(sql))``."""
    return Prebuilt(text(sql))


#: Statements of :class:`Prebuilt` writes made ``standalone``.
_STANDALONE: weakref.WeakSet[Any] = weakref.WeakSet()


def runs_alone(statement: Any) -> bool:
    """Whether ``statement`` may run in a statement unit of work (autocommit): a plain read
    (a ``SELECT`` without a row lock, as SQLAlchemy built it), or a write declared atomic on
    its own (``Prebuilt(..., standalone=True)``). Text is taken for a write."""
    if isinstance(statement, Select | CompoundSelect):
        return statement._for_update_arg is None
    try:
        return statement in _STANDALONE
    except TypeError:
        return False


def in_statement_unit(connection: Any) -> bool:
    """Whether ``connection`` (an ``AsyncConnection``, or a sync one) belongs to a statement
    unit of work."""
    sync = getattr(connection, "sync_connection", connection)
    return sync is not None and bool(sync.get_execution_options().get(STATEMENT_UNIT_OPTION))


def refuse_outside_transaction(statement: Any) -> None:
    """:class:`NeedsTransaction` for a statement a statement unit of work may not run."""
    if not runs_alone(statement):
        raise NeedsTransaction(f"needs a transaction: {type(statement).__name__}")


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled: Any = cast(ClauseElement, statement).compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:
        raise ValueError("the driver path runs statements whose SQL does not depend on values")
    _check_result_types(compiled._result_columns)
    names = tuple(compiled.positiontup or ())
    processors = tuple(
        (position, process)
        for position, name in enumerate(names)
        if (process := compiled._bind_processors.get(name)) is not None
    )
    return _Compiled(sql=compiled.string, names=names, processors=processors)


def _check_result_types(columns: Sequence[Any]) -> None:
    for column in columns:
        type_ = column[3]
        if isinstance(type_, Float) and not type_.asdecimal:
            continue
        if not isinstance(type_, _PASSED_THROUGH):
            raise ValueError(f"result column {column[0]!r} of type {type_!r} needs SQLAlchemy")
        if isinstance(type_, ARRAY):
            _check_result_types([(column[0], None, None, type_.item_type)])


class _Row(tuple[Any, ...]):
    """A row SQLAlchemy returned, addressable by column name too (as asyncpg's records are)."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> _Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)


def statements_observed(engine: Any) -> bool:
    """Whether somebody listens to ``engine``'s statements (an ``AsyncEngine`` or a sync
    ``Engine``): OpenTelemetry's SQLAlchemy instrumentation listens to the cursor events, and
    ``echo`` logs every statement."""
    sync_engine: Any = getattr(engine, "sync_engine", engine)
    # An engine with options (a read unit of work's) carries its own connect listeners; the
    # statement listeners are attached to the engine it was made from.
    dispatch = getattr(sync_engine, "_proxied", sync_engine).dispatch
    return bool(
        sync_engine.echo
        or dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or dispatch.before_execute
        or dispatch.after_execute
    )


def _driver_ready(sync: Connection) -> bool:
    """Whether this connection may skip SQLAlchemy: PostgreSQL, nobody listening to the
    statements of its engine (:func:`statements_observed`), and a live pooled connection
    (after an invalidation SQLAlchemy reconnects)."""
    if sync.dialect.name != "postgresql" or sync._echo or sync.invalidated:
        return False
    return not statements_observed(sync.engine)


async def fetch(
    connection: AsyncConnection, prebuilt: Prebuilt, params: Mapping[str, Any]
) -> Sequence[Any]:
    """The rows ``prebuilt`` returns with ``params`` (none for a statement returning none),
    each addressable by position and by column name; run by asyncpg where it can be (see the
    module), else by SQLAlchemy."""
    if not prebuilt.standalone and in_statement_unit(connection):
        raise NeedsTransaction("needs a transaction: a prebuilt statement that is not standalone")
    sync = connection.sync_connection
    if sync is None or not _driver_ready(sync):
        result = await connection.execute(prebuilt.statement, dict(params))
        if not result.returns_rows:
            return []
        index = {name: position for position, name in enumerate(result.keys())}
        return [_Row(row, index) for row in result.all()]
    compiled = prebuilt.compiled(sync.dialect)
    arguments = compiled.arguments(params)
    adapter: Any = sync.connection.dbapi_connection
    if not adapter.autocommit and not sync.in_transaction():
        # SQLAlchemy's bookkeeping only (so that its commit and rollback reach asyncpg's
        # transaction): the BEGIN itself is sent below, as SQLAlchemy would send it.
        sync.begin()
    try:
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()  # nothing in autocommit
            try:
                rows: Sequence[Any] = await adapter._connection.fetch(compiled.sql, *arguments)
                return rows
            except Exception as error:
                adapter._handle_exception(error)  # raises the adapter's DB-API error
                raise  # unreachable: _handle_exception always raises
    except Exception as error:
        replacement = await _statement_error(connection, compiled.sql, error)
        if replacement is error:
            raise
        raise replacement from error


async def commit(connection: AsyncConnection) -> None:
    """Commit ``connection``'s transaction. Where :func:`fetch` runs statements itself, the
    ``COMMIT`` is asyncpg's, sent on the adapter's transaction as SQLAlchemy's adapter sends
    it, and SQLAlchemy then only closes its own bookkeeping (nothing is left to send): this
    skips the greenlet and the engine's commit path (50 to 100 µs of CPU per transaction on the
    benchmarks' machine: the API's trigger groups, the workers' starts and outcomes).
    Elsewhere, SQLAlchemy's commit."""
    sync = connection.sync_connection
    if sync is not None and not sync.in_transaction():
        return  # nothing begun, nothing to commit (SQLAlchemy's commit does nothing either)
    if sync is None or not _driver_ready(sync):
        await connection.commit()
        return
    adapter: Any = sync.connection.dbapi_connection
    transaction = adapter._transaction
    if transaction is not None:
        try:
            try:
                # The adapter forgets the transaction whether COMMIT took or failed.
                await adapter._call_and_discard(transaction.commit)
            except Exception as error:
                adapter._handle_exception(error)  # raises the adapter's DB-API error
                raise  # unreachable: _handle_exception always raises
        except Exception as error:
            # SQLAlchemy's transaction stays open: leaving the unit of work rolls it back
            # (the adapter has nothing left to roll back) or finds the connection invalidated.
            replacement = await _statement_error(connection, "COMMIT", error)
            if replacement is error:
                raise
            raise replacement from error
    sync.commit()


async def _statement_error(
    connection: AsyncConnection, sql: str, error: Exception
) -> BaseException:
    """What SQLAlchemy raises for ``error`` from the driver: its ``DBAPIError`` subclass for
    the adapter's error (anything else as it is), the connection invalidated first when the
    server dropped it (the pool opens a fresh one), and the error says so."""
    sync = connection.sync_connection
    assert sync is not None
    dbapi: Any = sync.dialect.loaded_dbapi
    if not isinstance(error, dbapi.Error):
        return error
    adapter: Any = sync.connection.dbapi_connection
    disconnected = sync.dialect.is_disconnect(error, adapter, None)
    if disconnected:
        await connection.invalidate(error)
    replacement: BaseException = sa_exc.DBAPIError.instance(
        sql,
        None,
        error,
        dbapi.Error,
        connection_invalidated=disconnected,
        dialect=sync.dialect,
        ismulti=False,
    )
    return replacement
