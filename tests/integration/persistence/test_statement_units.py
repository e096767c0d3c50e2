"""Statement units of work (``SqlUnitOfWorkFactory.statements``) on PostgreSQL: autocommit, so
a plain read and a standalone write (new runs with their events) are one round trip each and
durable as they return; every other statement — a row lock, another write, a savepoint — is
refused with ``NeedsTransaction`` before it is sent, on the driver path and on SQLAlchemy's
(under tracing) alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.conftest import wipe
from scheduler_application.ports.unit_of_work import NeedsTransaction
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


@pytest.fixture(params=["driver", "sqlalchemy"])
async def engine(request: pytest.FixtureRequest, postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine nobody listens to (the driver path), or one whose statements are listened
    to (SQLAlchemy's path, as under tracing)."""
    engine = create_engine(postgres_url, pool_size=2)
    if request.param == "sqlalchemy":
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: None)
    try:
        yield engine
    finally:
        await wipe(engine)  # the session's database is shared with the other tests
        await engine.dispose()


async def _task(factory: SqlUnitOfWorkFactory) -> Task:
    now = datetime.now(UTC)
    task = Task(owner_id="alice", name="t", executor="noop", created_at=now, updated_at=now)
    async with factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    return task


def _run(task: Task) -> TaskRun:
    now = datetime.now(UTC)
    return TaskRun.create(task, trigger=RunTrigger.MANUAL, logical_time=now, now=now)


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(sql), params) or 0)


async def test_reads_and_standalone_writes_run_each_committed_as_it_returns(
    engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    run = _run(task)
    async with factory.statements() as uow:
        assert [found.id for found in await uow.tasks.get_many([task.id])] == [task.id]
        assert await uow.runs.add_new_many([run], events=[run.created_event(actor="a")]) == {run.id}
        # Committed already: another connection sees the run and its event.
        runs = "SELECT count(*) FROM task_runs WHERE id = :r"
        events = "SELECT count(*) FROM run_events WHERE run_id = :r"
        assert await _count(engine, runs, r=run.id) == 1
        assert await _count(engine, events, r=run.id) == 1
        await uow.rollback()  # undoes nothing already written
    assert await _count(engine, runs, r=run.id) == 1


async def test_a_statement_that_needs_a_transaction_is_refused_before_it_is_sent(
    engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    run = _run(task)
    async with factory.statements() as uow:
        with pytest.raises(NeedsTransaction):
            await uow.tasks.lock_many([task.id])  # SELECT … FOR UPDATE
        with pytest.raises(NeedsTransaction):
            await uow.events.add_many([run.created_event(actor="a")])  # a write of its own
        with pytest.raises(NeedsTransaction):
            await uow.runs.add(run)  # an insert that is not the standalone one
        with pytest.raises(NeedsTransaction):
            await uow.tasks.update(task, expected_version=task.version)  # a savepoint
    assert await _count(engine, "SELECT count(*) FROM task_runs") == 0
    assert await _count(engine, "SELECT count(*) FROM run_events") == 0


async def test_an_ordinary_unit_of_work_is_not_restricted(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    task = await _task(factory)
    async with factory() as uow:
        assert await uow.tasks.lock_many([task.id]) == {task.id}
        await uow.commit()
