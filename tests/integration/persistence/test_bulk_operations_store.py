"""Bulk operations on SQLite and PostgreSQL: the stored job (round trip, take-over of stale
ones by one process only), the counts behind the dry run, and 10,000 runs cancelled by filter."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from recording_queue import InMemoryRunQueue
from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.operations.bulk import BulkRunner, BulkService
from scheduler_application.operations.bulk_operations import (
    BulkAction,
    BulkOperation,
    BulkStatus,
    Selection,
)
from scheduler_application.ports.repositories import RunFilter, TaskFilter
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY, FakeClock
from scheduler_domain.accounts import Role
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.migrations import target_metadata
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(180)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ALICE = Principal("alice", Role.USER)


def _operation(**overrides: object) -> BulkOperation:
    values: dict[str, object] = {
        "action": BulkAction.CANCEL_RUNS,
        "actor_id": "alice",
        "actor_role": Role.USER,
        "selection": Selection(filter={"status": ["queued"]}),
        "created_at": T0,
        "heartbeat_at": T0,
        "frozen_at": T0,
    }
    values.update(overrides)
    return BulkOperation(**values)  # type: ignore[arg-type]


async def test_an_operation_round_trips_and_records_progress(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    operation = _operation(total=3)
    async with uow_factory() as uow:
        await uow.bulk_operations.add(operation)
        await uow.commit()
    operation.done, operation.succeeded, operation.failed = 2, 1, 1
    operation.results = [{"id": "r1", "outcome": "failed", "detail": "run r1 not found"}]
    operation.position = "cursor-after-2"
    operation.status = BulkStatus.SUCCEEDED
    operation.finished_at = T0 + timedelta(seconds=2)
    async with uow_factory() as uow:
        await uow.bulk_operations.update(operation)
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.bulk_operations.get(operation.id)
    assert stored == operation


async def test_a_stale_operation_is_taken_by_one_caller_only(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    stale = _operation(heartbeat_at=T0)
    fresh = _operation(heartbeat_at=T0 + timedelta(minutes=5))
    finished = _operation(heartbeat_at=T0, status=BulkStatus.SUCCEEDED)
    async with uow_factory() as uow:
        for operation in (stale, fresh, finished):
            await uow.bulk_operations.add(operation)
        await uow.commit()
    now = T0 + timedelta(minutes=6)

    async def take(delay: float) -> list[str]:
        async with uow_factory() as uow:
            await asyncio.sleep(delay)
            taken = await uow.bulk_operations.take_stale(
                stale_before=T0 + timedelta(minutes=1), now=now, limit=10
            )
            await asyncio.sleep(0.05)
            await uow.commit()
        return [o.id for o in taken]

    first, second = await asyncio.gather(take(0), take(0.01))
    assert sorted(first + second) == [stale.id]
    async with uow_factory() as uow:
        assert (await uow.bulk_operations.get(stale.id)).heartbeat_at == now  # type: ignore[union-attr]


async def test_counts_match_what_the_lists_page_through(uow_factory: SqlUnitOfWorkFactory) -> None:
    task = Task(owner_id="alice", name="t", executor="noop", created_at=T0, updated_at=T0)
    runs = [
        TaskRun(
            task_id=task.id,
            owner_id="alice",
            trigger=RunTrigger.MANUAL,
            scheduled_for=T0 + timedelta(microseconds=i),
            created_at=T0 + timedelta(microseconds=i),
        )
        for i in range(7)
    ]
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.runs.add_new_many(runs)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.runs.count(RunFilter(owner_id="alice")) == 7
        assert await uow.runs.count(RunFilter(owner_id="bob")) == 0
        assert await uow.runs.count(RunFilter(created_before=T0 + timedelta(microseconds=3))) == 3
        assert await uow.tasks.count(TaskFilter(owner_id="alice", name_prefix="t")) == 1
        assert await uow.tasks.count(TaskFilter(name_prefix="x")) == 0


@pytest.mark.postgres
async def test_ten_thousand_runs_cancelled_by_filter(postgres_engine: AsyncEngine) -> None:
    uow_factory = SqlUnitOfWorkFactory(postgres_engine)
    clock = FakeClock(T0 + timedelta(hours=1))
    try:
        tasks = TaskService(
            uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
        )
        task = await tasks.create({"name": "many", "executor": "noop"}, principal=ALICE)
        other = await tasks.create({"name": "other", "executor": "noop"}, principal=ALICE)
        async with uow_factory() as uow:
            for start in range(0, 10_000, 2_000):
                await uow.runs.add_new_many(
                    [
                        TaskRun(
                            task_id=task.id,
                            owner_id="alice",
                            trigger=RunTrigger.MANUAL,
                            scheduled_for=T0 + timedelta(microseconds=i),
                            created_at=T0 + timedelta(microseconds=i),
                        )
                        for i in range(start, start + 2_000)
                    ]
                )
            await uow.runs.add_new_many(
                [
                    TaskRun(
                        task_id=other.id,
                        owner_id="alice",
                        trigger=RunTrigger.MANUAL,
                        scheduled_for=T0,
                        created_at=T0,
                    )
                ]
            )
            await uow.commit()
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=InMemoryRunQueue())
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        runner = BulkRunner(uow_factory=uow_factory, clock=clock, runs=runs, tasks=tasks)
        bulk = BulkService(uow_factory=uow_factory, clock=clock, runner=runner)
        selection = Selection(filter={"task_id": task.id, "status": ["pending"]})
        assert await bulk.count(BulkAction.CANCEL_RUNS, selection, principal=ALICE) == 10_000

        began = time.monotonic()
        operation = await bulk.start(BulkAction.CANCEL_RUNS, selection, principal=ALICE)
        progress: list[int] = []
        while not operation.finished:
            await asyncio.sleep(0.2)
            operation = await bulk.get(operation.id, principal=ALICE)
            progress.append(operation.done)
        elapsed = time.monotonic() - began
        await runner.aclose()

        assert operation.status is BulkStatus.SUCCEEDED, operation.error
        assert (operation.total, operation.done, operation.succeeded) == (10_000,) * 3
        # Progress was reported along the way, not only at the end.
        assert len({p for p in progress if 0 < p < 10_000}) >= 2, progress
        async with uow_factory() as uow:
            cancelled = RunFilter(task_id=task.id, statuses=frozenset({RunStatus.CANCELLED}))
            assert await uow.runs.count(cancelled) == 10_000
            assert (
                await uow.runs.count(
                    RunFilter(task_id=other.id, statuses=frozenset({RunStatus.PENDING}))
                )
                == 1
            )
        async with postgres_engine.connect() as connection:
            events = await connection.scalar(
                text("SELECT count(*) FROM run_events WHERE to_status = 'cancelled'")
            )
        assert events == 10_000
        print(f"10,000 runs cancelled by filter in {elapsed:.1f} s")
    finally:
        names = ", ".join(table.name for table in target_metadata().sorted_tables)
        async with postgres_engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))
