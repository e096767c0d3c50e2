"""Read units of work open no transaction they do not need: on PostgreSQL a read is its one
statement (no BEGIN before, no ROLLBACK after); on SQLite a read takes no write lock. The
``statements`` units (a write that is one statement) neither, on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role, User
from scheduler_domain.clock import utc_now
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
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


@pytest.mark.postgres
async def test_a_statements_unit_on_postgres_starts_runs_in_their_one_statement(
    postgres_engine: AsyncEngine,
) -> None:
    """The worker's start of its runs (``statements``): no transaction around the statement,
    so the start is durable — seen by another connection — before any commit."""
    factory = SqlUnitOfWorkFactory(postgres_engine)
    user = await _user(factory)
    now = utc_now()
    task = Task(owner_id=user.id, name="started", executor="noop", created_at=now, updated_at=now)
    run = TaskRun(
        task_id=task.id,
        owner_id=user.id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=now,
        created_at=now,
        status=RunStatus.QUEUED,
    )
    try:
        async with factory() as uow:
            await uow.tasks.add(task)
            await uow.runs.add(run)
            await uow.commit()
        async with factory.statements() as uow:
            driver = (await uow.connection.get_raw_connection()).driver_connection
            assert driver is not None
            started = await uow.runs.start_many(
                [run.id], worker_id="w-1", now=now, lease=timedelta(seconds=30)
            )
            assert [(r.id, t.id if t else None) for r, t in started] == [(run.id, task.id)]
            assert not driver.is_in_transaction()
            async with factory() as other:
                seen = await other.runs.get(run.id)
            assert seen is not None
            assert seen.status is RunStatus.RUNNING
            assert seen.worker_id == "w-1"
    finally:
        async with factory() as uow:
            await uow.connection.exec_driver_sql("DELETE FROM tasks WHERE name = 'started'")
            await uow.connection.exec_driver_sql("DELETE FROM users WHERE username = 'reader'")
            await uow.commit()


async def test_a_statements_unit_on_sqlite_is_a_transaction(sqlite_engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(sqlite_engine)
    async with factory.statements() as uow:
        await uow.users.add(
            User(username="kept", password_hash="x", role=Role.USER, created_at=utc_now(),
                 updated_at=utc_now())
        )  # fmt: skip
        assert uow.connection.in_transaction()
        await uow.rollback()
    async with factory() as uow:
        assert await uow.users.get_by_username("kept") is None
