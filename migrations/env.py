"""Alembic environment: one history for PostgreSQL and SQLite, run on the async engine.

The database URL is, first match wins: the ``url`` attribute set by
``scheduler_infrastructure.persistence.migrations``; ``-x url=...`` on the command line; the
``SCHEDULER__DATABASE__URL`` environment variable; ``sqlite+aiosqlite:///var/scheduler.db``.
A caller may also hand over an open synchronous connection as the ``connection`` attribute.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from scheduler_infrastructure.persistence.engine import async_url, create_engine
from scheduler_infrastructure.persistence.migrations import context_options, target_metadata

DEFAULT_URL = "sqlite+aiosqlite:///var/scheduler.db"

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Every table the history creates, including those other adapters define (SCHEMA_MODULES).
metadata = target_metadata()


def database_url() -> str:
    return str(
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("SCHEDULER__DATABASE__URL")
        or DEFAULT_URL
    )


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    url = async_url(database_url())
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch migration rebuilds a table (copy, DROP, rename), and with foreign keys on,
        # SQLite's DROP TABLE deletes the rows that reference it first (ON DELETE CASCADE:
        # a task's runs). They are turned off around the migrations — which only works outside
        # a transaction, so on the raw connection before Alembic begins one — and every
        # reference is checked before they are turned back on.
        _sqlite_pragma(connection, "PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            **context_options(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite and _sqlite_pragma(connection, "PRAGMA foreign_key_check"):
            raise RuntimeError("the migrated SQLite database has broken foreign keys")
    finally:
        if sqlite:
            _sqlite_pragma(connection, "PRAGMA foreign_keys=ON")


def _sqlite_pragma(connection: Connection, pragma: str) -> list[object]:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(pragma)
        return list(cursor.fetchall())
    finally:
        cursor.close()


async def run_async_migrations() -> None:
    # The application's engine factory, so SQLite gets the same pragmas (foreign keys, WAL,
    # busy timeout) and BEGIN IMMEDIATE transactions as at run time.
    engine = create_engine(database_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
