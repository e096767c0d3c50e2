"""Integration fixtures: real PostgreSQL and SQLite databases, migrated with the real history.

PostgreSQL is ``SCHEDULER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``, trust auth); each test session creates a fresh ``scheduler_test_<hex>`` database and
drops it at the end. When the server cannot be reached, tests that need it are skipped with the
reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import target_metadata, upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from services import POSTGRES_ADMIN_URL, plain_dsn, probe, require

#: Creates an empty PostgreSQL database and returns its SQLAlchemy (asyncpg) URL.
DatabaseMaker = Callable[[], Awaitable[str]]


@cache
def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None; probed once per session, in a thread so that it
    works whether or not an event loop is running."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, probe("postgres")).result()


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is unreachable (fail instead when CI=true)."""
    require(f"PostgreSQL at {POSTGRES_ADMIN_URL}", _postgres_problem())


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(plain_dsn(POSTGRES_ADMIN_URL), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_postgres_database() -> str:
    """A new empty database; returns its ``postgresql+asyncpg`` URL."""
    name = f"scheduler_test_{secrets.token_hex(6)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


async def migrate(url: str) -> None:
    # Alembic's env runs its own event loop: keep it off ours.
    await asyncio.to_thread(upgrade, url)


async def wipe(engine: AsyncEngine) -> None:
    """Delete every row (the schema and alembic_version stay)."""
    tables = target_metadata().sorted_tables
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            names = ", ".join(table.name for table in tables)
            await connection.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                await connection.execute(delete(table))


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A migrated database shared by the session; tests clean up after themselves."""
    require_postgres()
    url = await create_postgres_database()
    try:
        await migrate(url)
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture(scope="session")
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
async def fresh_postgres_database() -> AsyncIterator[DatabaseMaker]:
    """Makes empty databases (not migrated), dropped when the test ends."""
    require_postgres()
    made: list[str] = []

    async def make() -> str:
        url = await create_postgres_database()
        made.append(url)
        return url

    yield make
    for url in made:
        await drop_postgres_database(url)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="module")
async def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file per test module (migrating per test would dominate the run time)."""
    url = sqlite_url(tmp_path_factory.mktemp("sqlite") / "scheduler.db")
    await migrate(url)
    engine = create_engine(url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_engine(request: pytest.FixtureRequest) -> AsyncEngine:
    engine: AsyncEngine = request.getfixturevalue(f"{request.param}_engine")
    return engine


@pytest.fixture
async def engine(backend_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on each backend in turn, emptied after the test."""
    yield backend_engine
    await wipe(backend_engine)


@pytest.fixture
def uow_factory(engine: AsyncEngine) -> SqlUnitOfWorkFactory:
    return SqlUnitOfWorkFactory(engine)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder task processes may use whoever they run as (pytest's own are
    private to the user running the tests)."""
    folder = Path(tempfile.mkdtemp(prefix="scheduler-task-"))
    folder.chmod(0o777)
    try:
        yield folder.resolve()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
