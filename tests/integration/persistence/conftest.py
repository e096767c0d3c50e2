"""The persistence contract runs on three backends: SQLite, PostgreSQL and the in-memory fakes
of ``scheduler_application.testing`` that the unit tests use. A test that asks for ``engine``
reads the database itself (or tests an SQL-only adapter) and runs on the two databases only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.conftest import wipe
from scheduler_application.testing import InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def contract_backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    """A migrated database engine, or None for the in-memory fakes."""
    if request.param == "memory":
        if "engine" in request.fixturenames:
            pytest.skip("a test of the SQL adapters (it reads the database itself)")
        return None
    engine: AsyncEngine = request.getfixturevalue(f"{request.param}_engine")
    return engine


@pytest.fixture
async def engine(contract_backend: AsyncEngine | None) -> AsyncIterator[AsyncEngine]:
    """The database of the test's backend (tests that ask for it run on the databases only)."""
    assert contract_backend is not None
    yield contract_backend
    await wipe(contract_backend)


@pytest.fixture
async def uow_factory(contract_backend: AsyncEngine | None) -> AsyncIterator[Any]:
    """The SQL unit of work on each database, and the in-memory fake the unit tests use: the
    same contract for all three."""
    if contract_backend is None:
        yield InMemoryUnitOfWorkFactory(InMemoryStore())
        return
    yield SqlUnitOfWorkFactory(contract_backend)
    await wipe(contract_backend)
