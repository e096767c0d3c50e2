"""The async engine, tuned per backend.

SQLite serialises writers on a file lock. Python's sqlite3 module starts transactions lazily
(``BEGIN DEFERRED`` before the first write), so a transaction that reads and then writes may find
the lock taken and fail with "database is locked" at once: waiting cannot help it, because its
snapshot is already stale. Following SQLAlchemy's documented recipe for aiosqlite, we take over
transaction control and open every transaction with ``BEGIN IMMEDIATE``: the write lock is taken
up front, and a second writer waits for it (up to ``busy_timeout``) instead of failing. WAL mode
lets readers outside transactions proceed meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
PREPARED_STATEMENTS_PER_CONNECTION = 500
#: The connection option of a read unit of work: on SQLite it begins ``BEGIN DEFERRED``.
READ_ONLY_OPTION = "scheduler_read_only"
#: The connection option of a statement unit of work (PostgreSQL, autocommit): statements that
#: need a transaction are refused (``unit_of_work.StatementUnitOfWork``, ``driver.fetch``).
STATEMENT_UNIT_OPTION = "scheduler_statement_unit"
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(url: str | URL) -> URL:
    """``url`` with the async driver this package uses (``postgresql://`` -> asyncpg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use postgresql or sqlite")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend])


def is_sqlite_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 10,
    echo: bool = False,
    server_settings: dict[str, str] | None = None,
) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` URLs;
    ``server_settings``: PostgreSQL settings every connection of the engine starts with."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, pool_size=pool_size, echo=echo)
    # Every connection opened is kept (up to twice ``pool_size``, as many as the pool used to
    # hold with its overflow): an overflow connection was closed after each use, so under load
    # every few checkouts paid a new connection, its type introspection (asyncpg's codecs for
    # json, jsonb, inet and cidr: four queries) and preparing every statement again.
    # Each connection keeps its prepared statements (SQLAlchemy's cache, keyed by the SQL): 500
    # rather than 100, so that the list endpoints' many filter combinations do not evict the
    # hot statements and prepare them again (a round trip each).
    engine = create_async_engine(
        parsed,
        pool_size=2 * pool_size,
        max_overflow=0,
        pool_recycle=1800,
        echo=echo,
        connect_args={
            "prepared_statement_cache_size": PREPARED_STATEMENTS_PER_CONNECTION,
            **({"server_settings": server_settings} if server_settings else {}),
        },
    )
    _refuse_closed_connections(engine)
    return engine


def _refuse_closed_connections(engine: AsyncEngine) -> None:
    """Hand out no connection the server has closed, without a round trip.

    SQLAlchemy's ``pool_pre_ping`` costs three round trips per checkout with asyncpg (``BEGIN``,
    an empty query, ``ROLLBACK``) — more than many units of work spend on their own work. A
    connection the server terminated (restart, ``pg_terminate_backend``, idle timeout) has
    already seen the end of its socket, and asyncpg reports it closed: such a connection is
    replaced at checkout. One that dies later fails its first statement, which the callers
    treat as the outage it is (``Unavailable``: retried).
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if server_closed(dbapi_connection):
            raise DisconnectionError("the server closed this connection")


def server_closed(dbapi_connection: Any) -> bool:
    """Whether the server closed this DBAPI connection (asyncpg saw its socket end), known
    without a round trip."""
    driver = getattr(dbapi_connection, "_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed is not None and is_closed())


def _sqlite_engine(url: URL, *, pool_size: int, echo: bool) -> AsyncEngine:
    options: dict[str, Any] = {"echo": echo}
    if not is_sqlite_memory(url):
        assert url.database is not None
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        options.update(pool_size=pool_size, max_overflow=pool_size)
    engine = create_async_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **options
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # No implicit BEGIN from the driver: _begin below emits ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        # A read unit of work takes no write lock: a deferred transaction is its snapshot.
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
