"""Dispatcher integration fixtures: a real database per backend (``uow_factory`` from the
integration conftest), Redis for the rate limiter, and the in-process stack."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from dispatcher_stack import REDIS_URL
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.persistence.migrations import target_metadata
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory


async def _redis_problem() -> str | None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    finally:
        await client.aclose()
    return None


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of its own; every key under it is deleted when the test ends."""
    problem = await _redis_problem()
    if problem is not None:
        message = f"Redis at {REDIS_URL} is unreachable ({problem})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)
    prefix = f"scheduler-test:{secrets.token_hex(6)}:ratelimit"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
    await asyncio.sleep(0)


@pytest.fixture
async def postgres_uow_factory(
    postgres_engine: AsyncEngine,
) -> AsyncIterator[SqlUnitOfWorkFactory]:
    """For the tests that are about PostgreSQL only (row locks, LISTEN/NOTIFY); every row is
    deleted afterwards."""
    yield SqlUnitOfWorkFactory(postgres_engine)
    names = ", ".join(table.name for table in target_metadata().sorted_tables)
    async with postgres_engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))
