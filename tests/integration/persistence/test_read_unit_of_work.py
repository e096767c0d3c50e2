"""Read units of work open no transaction they do not need: on PostgreSQL a read is its one
statement (no BEGIN before, no ROLLBACK after); on SQLite a read takes no write lock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role, User
from scheduler_domain.clock import utc_now
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory


async def _user(factory: SqlUnitOfWorkFactory) -> User:
    now = utc_now()
    user = User(
        username="reader", password_hash="x", role=Role.USER, created_at=now, updated_at=now
    )
    async with factory() as uow:
        await uow.users.add(user)
        await uow.commit()
    return user


@pytest.mark.postgres
async def test_a_read_on_postgres_is_one_statement_outside_any_transaction(
    postgres_engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(postgres_engine)
    user = await _user(factory)
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(str(args[2]).split()[0].upper())

    event.listen(postgres_engine.sync_engine, "before_cursor_execute", record)
    try:
        async with factory.reads() as uow:
            driver = (await uow.connection.get_raw_connection()).driver_connection
            assert driver is not None
            found = await uow.users.get(user.id)
            assert found is not None
            assert not driver.is_in_transaction()
        async with factory() as uow:  # a writing unit of work still has its transaction
            driver = (await uow.connection.get_raw_connection()).driver_connection
            assert driver is not None
            await uow.users.get(user.id)
            assert driver.is_in_transaction()
    finally:
        event.remove(postgres_engine.sync_engine, "before_cursor_execute", record)
        async with factory() as uow:
            await uow.connection.exec_driver_sql("DELETE FROM users WHERE username = 'reader'")
            await uow.commit()
    assert sent == ["SELECT", "SELECT"]


async def test_a_read_on_sqlite_takes_no_write_lock(sqlite_engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(sqlite_engine)
    user = await _user(factory)
    try:
        async with factory() as writer:  # holds the write lock (BEGIN IMMEDIATE) until it ends
            await writer.users.bump_token_generation(user.id)
            async with asyncio.timeout(5), factory.reads() as reader:
                found = await reader.users.get(user.id)  # would wait 30 s for the lock
            assert found is not None
            assert found.token_generation == 0  # the writer has not committed
            await writer.commit()
    finally:
        async with factory() as uow:
            await uow.connection.exec_driver_sql("DELETE FROM users WHERE username = 'reader'")
            await uow.commit()
