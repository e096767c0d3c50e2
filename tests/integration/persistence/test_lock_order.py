"""Statements that lock many runs at once lock them in one order (by id), whatever order their
callers hand the runs in: a worker renewing its leases while its outcomes are written (two
connections, overlapping runs), or two of those beside a dispatcher's batch, never deadlock.

Without the order PostgreSQL detects the cycle and fails one statement ("deadlock detected"),
which cost a worker a batch of outcomes (issue 15's CI run): this race makes one within a few
rounds when each statement takes the runs in an order of its own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from integration.conftest import wipe
from scheduler_application.errors import Contended
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
RUNS = 60
ROUNDS = 100


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=8)
    try:
        yield engine
    finally:
        await wipe(engine)  # the session's database is shared with the other tests
        await engine.dispose()


async def _running_runs(factory: SqlUnitOfWorkFactory) -> list[TaskRun]:
    task = Task(owner_id="owner", name="locks", executor="noop", created_at=T0, updated_at=T0)
    runs = [
        TaskRun(
            task_id=task.id,
            owner_id=task.owner_id,
            trigger=RunTrigger.MANUAL,
            scheduled_for=T0 + timedelta(microseconds=i),
            created_at=T0,
            status=RunStatus.RUNNING,
            worker_id="w-1",
            started_at=T0,
            lease_expires_at=T0 + LEASE,
            version=3,
        )
        for i in range(RUNS)
    ]
    async with factory() as uow:
        await uow.tasks.add(task)
        for run in runs:
            await uow.runs.add(run)
        await uow.commit()
    return runs


async def test_overlapping_batches_in_different_orders_never_deadlock(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    statements = factory.statements
    assert statements is not None
    runs = await _running_runs(factory)
    rng = random.Random(15)

    def shuffled() -> list[TaskRun]:
        order = list(runs)
        rng.shuffle(order)
        return order

    async def renew(order: list[TaskRun], now: datetime) -> set[str]:
        async with factory() as uow:
            renewed = await uow.runs.renew_leases(
                [(run.id, run.version) for run in order], worker_id="w-1", now=now, lease=LEASE
            )
            await uow.commit()
        return renewed

    async def write_each(order: list[TaskRun], now: datetime) -> set[str]:
        for run in order:
            run.heartbeat_at = now
        async with statements() as uow:
            return await uow.runs.update_each(
                [(run, run.version) for run in order], fields=("heartbeat_at",)
            )

    async def write_many(order: list[TaskRun], now: datetime) -> None:
        async with factory() as uow:
            await uow.runs.update_many(
                [(run, run.version) for run in order], fields=("heartbeat_at",)
            )
            await uow.commit()

    everyone = {run.id for run in runs}
    for round_ in range(ROUNDS):
        now = T0 + timedelta(seconds=round_)
        renewed, written, _ = await asyncio.gather(
            renew(shuffled(), now), write_each(shuffled(), now), write_many(shuffled(), now)
        )
        # Every statement wrote every run: none failed, none skipped one (the versions stay).
        assert renewed == everyone
        assert written == everyone


async def test_a_deadlock_broken_by_postgresql_is_a_lost_race_to_retry(engine: AsyncEngine) -> None:
    """The one of two crossed transactions that PostgreSQL fails is ``Contended`` (nothing
    written, worth another try: the worker tries it again), not a plain ``Conflict``."""
    first, second = (await _running_runs(SqlUnitOfWorkFactory(engine)))[:2]
    lock = text("SELECT id FROM task_runs WHERE id = :id FOR NO KEY UPDATE")

    async def take(connection: AsyncConnection, run_id: str) -> None:
        async with translated("run"):
            await connection.execute(lock, {"id": run_id})

    async with engine.connect() as one, engine.connect() as two:
        await take(one, first.id)
        await take(two, second.id)
        results = await asyncio.gather(
            take(one, second.id), take(two, first.id), return_exceptions=True
        )
        await one.rollback()
        await two.rollback()
    lost = [result for result in results if isinstance(result, BaseException)]
    assert len(lost) == 1, results
    assert isinstance(lost[0], Contended)
    assert "deadlock detected" in str(lost[0])
