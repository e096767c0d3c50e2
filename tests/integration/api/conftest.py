"""API fixtures: most tests run on SQLite (one migrated file per module, emptied after each
test); ``test_api_postgres_smoke.py`` runs the main flows on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from api_harness import Api, Caller, running_api, wipe
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role


@pytest.fixture
async def api(sqlite_engine: AsyncEngine) -> AsyncIterator[Api]:
    async with running_api(sqlite_engine) as harness:
        yield harness
    await wipe(sqlite_engine)


@pytest.fixture
async def admin(api: Api) -> Caller:
    return await api.user("root", Role.ADMIN)


@pytest.fixture
async def alice(api: Api) -> Caller:
    return await api.user("alice", Role.USER)


@pytest.fixture
async def bob(api: Api) -> Caller:
    return await api.user("bob", Role.USER)


@pytest.fixture
async def clean_engine(sqlite_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """For tests that build their own API (other options): the database, emptied afterwards."""
    yield sqlite_engine
    await wipe(sqlite_engine)
