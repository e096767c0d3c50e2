"""A deadlock PostgreSQL breaks fails one of the transactions in it: that one is
``Contended`` (nothing of it written, worth another try: the worker tries an outcome again,
the batched outcome path decides it afresh), not a plain ``Conflict``, which is an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from integration.conftest import wipe
from scheduler_application.errors import Contended
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=4)
    try:
        yield engine
    finally:
        await wipe(engine)  # the session's database is shared with the other tests
        await engine.dispose()


async def _two_runs(factory: SqlUnitOfWorkFactory) -> list[str]:
    task = Task(owner_id="owner", name="races", executor="noop", created_at=T0, updated_at=T0)
    runs = [
        TaskRun.create(
            task, trigger=RunTrigger.MANUAL, logical_time=T0 + timedelta(seconds=i), now=T0
        )
        for i in range(2)
    ]
    async with factory() as uow:
        await uow.tasks.add(task)
        for run in runs:
            await uow.runs.add(run)
        await uow.commit()
    return [run.id for run in runs]


async def test_a_deadlock_broken_by_postgresql_is_a_lost_race_to_retry(engine: AsyncEngine) -> None:
    first, second = await _two_runs(SqlUnitOfWorkFactory(engine))
    lock = text("SELECT id FROM task_runs WHERE id = :id FOR NO KEY UPDATE")

    async def take(connection: AsyncConnection, run_id: str) -> None:
        async with translated("run"):
            await connection.execute(lock, {"id": run_id})

    async with engine.connect() as one, engine.connect() as two:
        await take(one, first)
        await take(two, second)
        results = await asyncio.gather(take(one, second), take(two, first), return_exceptions=True)
        await one.rollback()
        await two.rollback()
    lost = [result for result in results if isinstance(result, BaseException)]
    assert len(lost) == 1, results
    assert isinstance(lost[0], Contended)
    assert "deadlock detected" in str(lost[0])
