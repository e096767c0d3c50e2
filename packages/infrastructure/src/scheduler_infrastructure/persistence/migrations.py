"""Run the Alembic history from Python (the CLI's ``db upgrade`` and friends, test fixtures).

These are plain synchronous functions. The migration environment (``migrations/env.py``) drives
the async engine with ``asyncio.run``, so when they are called while an event loop is running in
the calling thread (from a coroutine), the work moves to a helper thread and the caller blocks
until it is done; async code that must not block should call them via ``asyncio.to_thread``.

Where the migrations are found, first match wins:

1. ``config_path``: an ``alembic.ini`` file, or a directory holding ``alembic.ini`` or ``env.py``;
2. the ``SCHEDULER_MIGRATIONS_DIR`` environment variable: the migrations directory itself (the
   one holding ``env.py`` and ``versions/``), for installs without the repository's ini file;
3. an ``alembic.ini`` next to a ``migrations/env.py`` in the current working directory or one of
   its parents (running from anywhere inside a checkout);
4. the same search upwards from this module's own location (an editable or workspace install).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData

from scheduler_infrastructure.persistence.column_types import UTCDateTime
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.tables import metadata

MIGRATIONS_DIR_ENV = "SCHEDULER_MIGRATIONS_DIR"
#: Modules that put tables on the shared :data:`~.tables.metadata`. Autogenerate and the drift
#: check must see every table the history creates, so a module defining tables belongs here.
SCHEMA_MODULES = (
    "scheduler_infrastructure.persistence.tables",
    "scheduler_infrastructure.queues.postgres_schema",
)
T = TypeVar("T")


def upgrade(url: str, revision: str = "head", *, config_path: str | Path | None = None) -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest)."""
    config = migration_config(url, config_path)
    _outside_event_loop(lambda: command.upgrade(config, revision))


def downgrade(url: str, revision: str, *, config_path: str | Path | None = None) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"``: an empty schema)."""
    config = migration_config(url, config_path)
    _outside_event_loop(lambda: command.downgrade(config, revision))


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for a database never migrated."""
    return _outside_event_loop(lambda: asyncio.run(_current(url)))


def head(*, config_path: str | Path | None = None) -> str | None:
    """The newest revision of the migration history."""
    return ScriptDirectory.from_config(migration_config(None, config_path)).get_current_head()


def migration_config(url: str | None, config_path: str | Path | None = None) -> Config:
    """An Alembic :class:`Config` for the history found as the module docstring describes,
    aimed at ``url`` and leaving the host program's logging configuration alone."""
    config = _find_config(config_path)
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


def target_metadata() -> MetaData:
    """The metadata with every table of :data:`SCHEMA_MODULES` registered on it."""
    for module in SCHEMA_MODULES:
        importlib.import_module(module)
    return metadata


def context_options(dialect_name: str) -> dict[str, Any]:
    """The options ``env.py`` gives Alembic; the drift test compares with the same ones."""
    return {
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
        # SQLite can roll DDL back too; Alembic just does not assume it. One transaction per
        # upgrade means a failed migration leaves the schema as it was.
        "transactional_ddl": True,
        "render_item": _render_item,
    }


def _render_item(kind: str, item: Any, context: AutogenContext) -> str | bool:
    # Migrations must not import application code: write our instant type as what it is in DDL.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


async def _current(url: str) -> str | None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def _find_config(config_path: str | Path | None) -> Config:
    if config_path is not None:
        path = Path(config_path)
        if path.is_file():
            return Config(str(path))
        if (path / "alembic.ini").is_file():
            return Config(str(path / "alembic.ini"))
        if (path / "env.py").is_file():
            return _bare_config(path)
        raise FileNotFoundError(f"no alembic.ini or env.py at {path}")
    from_env = os.environ.get(MIGRATIONS_DIR_ENV)
    if from_env:
        directory = Path(from_env)
        if not (directory / "env.py").is_file():
            raise FileNotFoundError(
                f"{MIGRATIONS_DIR_ENV}={from_env} is not a migrations directory (no env.py)"
            )
        return _bare_config(directory)
    cwd = Path.cwd().resolve()
    here = Path(__file__).resolve().parent
    for directory in (cwd, *cwd.parents, *here.parents):
        ini = directory / "alembic.ini"
        if ini.is_file() and (directory / "migrations" / "env.py").is_file():
            return Config(str(ini))
    raise FileNotFoundError(
        "cannot find the migrations: run from the repository, pass config_path, or set "
        f"{MIGRATIONS_DIR_ENV} to the migrations directory"
    )


def _bare_config(directory: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(directory.resolve()))
    config.set_main_option("path_separator", "os")
    return config


def _outside_event_loop(work: Callable[[], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed back to the calling thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name="scheduler-migrations")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
