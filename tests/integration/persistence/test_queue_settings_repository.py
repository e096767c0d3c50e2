"""The queue settings repository and the run queries behind queue steering, on SQLite and
PostgreSQL: settings round-trip and upsert, a run belongs to its task's queue even in a worker's
direct queue, in-flight counts per queue span its tasks, the pending query leaves queues out,
and a settings row locked by one transaction is skipped by another (PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.ids import new_id
from scheduler_domain.queue_settings import QueueSettings
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _task(queue: str) -> Task:
    return Task(
        owner_id="o", name=f"t-{new_id()[-10:]}", executor="noop", queue=queue,
        created_at=T0, updated_at=T0,
    )  # fmt: skip


def _run(task: Task, status: RunStatus, n: int, *, queue: str | None = None) -> TaskRun:
    run = TaskRun(
        task_id=task.id, owner_id="o", trigger=RunTrigger.MANUAL,
        scheduled_for=T0 - timedelta(seconds=n), created_at=T0, queue=queue or task.queue,
        idempotency_key=new_id(),
    )  # fmt: skip
    if status is not RunStatus.PENDING:
        run.mark_queued(now=T0)
    if status is RunStatus.RUNNING:
        run.claim(worker_id="w", now=T0, lease=timedelta(seconds=30))
    return run


async def test_settings_round_trip_and_upsert(uow_factory: SqlUnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        await uow.queue_settings.save(
            QueueSettings(
                name="bulk", rate_limit=RateLimit.parse("5/10s"), max_concurrency=3,
                updated_by="user:a", updated_at=T0,
            )
        )  # fmt: skip
        await uow.queue_settings.save(
            QueueSettings(name="bulk", paused=True, updated_by="user:b", updated_at=T0)
        )
        await uow.queue_settings.save(QueueSettings(name="a", updated_by="x", updated_at=T0))
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.queue_settings.get("bulk")
        listed = await uow.queue_settings.list()
        some = await uow.queue_settings.get_many(["bulk", "nope"])
        missing = await uow.queue_settings.get("nope")

    assert stored == QueueSettings(name="bulk", paused=True, updated_by="user:b", updated_at=T0)
    assert [s.name for s in listed] == ["a", "bulk"]
    assert [s.name for s in some] == ["bulk"]
    assert missing is None


async def test_runs_belong_to_their_task_queue(uow_factory: SqlUnitOfWorkFactory) -> None:
    steered, other = _task("steered"), _task("other")
    pending = _run(steered, RunStatus.PENDING, 1)
    queued = _run(steered, RunStatus.QUEUED, 2)
    direct = _run(steered, RunStatus.QUEUED, 3, queue="worker.w1")  # routed to a worker
    running = _run(steered, RunStatus.RUNNING, 4)
    elsewhere = _run(other, RunStatus.QUEUED, 5)
    async with uow_factory() as uow:
        await uow.tasks.add(steered)
        await uow.tasks.add(other)
        for run in (pending, queued, direct, running, elsewhere):
            await uow.runs.add(run)
        await uow.commit()
    async with uow_factory() as uow:
        waiting = await uow.runs.waiting_in_queues(
            ["steered"], statuses=[RunStatus.PENDING, RunStatus.QUEUED], limit=10
        )
        only_queued = await uow.runs.waiting_in_queues(
            ["steered"], statuses=[RunStatus.QUEUED], limit=1
        )
        counts = await uow.runs.count_in_flight_by_queue(["steered", "other", "empty"])
        due = await uow.runs.pending_due_excluding(
            T0, limit=10, exclude_task_ids=[], exclude_queues=["steered"]
        )
        due_all = await uow.runs.pending_due_excluding(T0, limit=10, exclude_task_ids=[])

    assert {r.id for r in waiting} == {pending.id, queued.id, direct.id}
    assert len(only_queued) == 1
    assert only_queued[0].status is RunStatus.QUEUED
    assert counts == {"steered": 3, "other": 1}
    assert due == []
    assert [r.id for r in due_all] == [pending.id]


@pytest.mark.postgres
async def test_a_locked_settings_row_is_skipped_by_another_transaction(
    postgres_engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(postgres_engine)
    name = f"locked-{new_id()[-8:]}"
    async with factory() as uow:
        await uow.queue_settings.save(QueueSettings(name=name, max_concurrency=1, updated_by="x",
                                                    updated_at=T0))  # fmt: skip
        await uow.commit()
    try:
        async with factory() as first, factory() as second:
            assert await first.queue_settings.lock_many([name, "nope"]) == {name}
            assert await second.queue_settings.lock_many([name]) == set()
    finally:
        async with postgres_engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM queue_settings WHERE name = :n"), {"n": name}
            )
