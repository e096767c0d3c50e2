"""The repository methods the dispatcher added, on SQLite and PostgreSQL (and the PostgreSQL
row locks they rely on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.tables import task_runs
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)


def task(name: str, *upstreams: Task) -> Task:
    return Task(
        owner_id="owner",
        name=name,
        executor="noop",
        depends_on=tuple(u.id for u in upstreams),
        created_at=T0,
        updated_at=T0,
    )


def run(
    of: Task,
    status: RunStatus,
    *,
    minute: int = 0,
    queue: str = "default",
    finished: datetime | None = None,
    not_before: datetime | None = None,
) -> TaskRun:
    return TaskRun(
        task_id=of.id,
        owner_id=of.owner_id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=T0 + timedelta(minutes=minute),
        created_at=T0,
        status=status,
        queue=queue,
        queued_at=T0 if status is RunStatus.QUEUED else None,
        finished_at=finished,
        not_before=not_before,
    )


async def seed(uow_factory: SqlUnitOfWorkFactory, tasks: list[Task], runs: list[TaskRun]) -> None:
    async with uow_factory() as uow:
        for item in tasks:
            await uow.tasks.add(item)
        for item in runs:
            await uow.runs.add(item)
        await uow.commit()


async def test_count_in_flight_and_pending_queries(uow_factory: SqlUnitOfWorkFactory) -> None:
    a, b = task("a"), task("b")
    due = T0 - timedelta(seconds=1)
    runs = [
        run(a, RunStatus.QUEUED, minute=1),
        run(a, RunStatus.PENDING, minute=2),
        run(a, RunStatus.PENDING, minute=3, not_before=T0 + timedelta(hours=1)),
        run(b, RunStatus.PENDING, minute=4, not_before=due),
        run(b, RunStatus.SUCCEEDED, minute=5),
    ]
    await seed(uow_factory, [a, b], runs)
    async with uow_factory() as uow:
        assert await uow.runs.count_in_flight([a.id, b.id]) == {a.id: 1}
        excluded = await uow.runs.pending_due_excluding(T0, limit=10, exclude_task_ids=[a.id])
        assert [r.id for r in excluded] == [runs[3].id]
        everything = await uow.runs.pending_due_excluding(T0, limit=10, exclude_task_ids=[])
        assert {r.id for r in everything} == {runs[1].id, runs[3].id}
        among = await uow.runs.pending_among([runs[0].id, runs[1].id, runs[2].id], T0)
        assert [r.id for r in among] == [runs[1].id]  # queued and not-yet-due ones left out
        assert await uow.tasks.lock_many([a.id, b.id, "missing"]) == {a.id, b.id}


async def test_queued_in_finds_runs_by_queue(uow_factory: SqlUnitOfWorkFactory) -> None:
    a = task("a")
    runs = [
        run(a, RunStatus.QUEUED, minute=1, queue="worker.w1"),
        run(a, RunStatus.QUEUED, minute=2, queue="worker.w2"),
        run(a, RunStatus.PENDING, minute=3, queue="worker.w1"),
    ]
    await seed(uow_factory, [a], runs)
    async with uow_factory() as uow:
        found = await uow.runs.queued_in(["worker.w1", "worker.gone"], limit=10)
        assert [r.id for r in found] == [runs[0].id]


async def test_finished_upstream_runs_reads_only_unresolved_terminal_runs_of_upstreams(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    up, lonely = task("up"), task("lonely")
    down = task("down", up)
    at = T0 + timedelta(minutes=10)
    runs = [
        run(up, RunStatus.SUCCEEDED, minute=1, finished=at),
        run(up, RunStatus.DEAD_LETTERED, minute=2, finished=at + timedelta(seconds=1)),
        run(up, RunStatus.CANCELLED, minute=3, finished=at + timedelta(seconds=2)),
        run(up, RunStatus.FAILED, minute=4, finished=at),  # its retry will speak for it
        run(up, RunStatus.RUNNING, minute=5),
        run(up, RunStatus.SUCCEEDED, minute=6, finished=T0),  # before the horizon
        run(lonely, RunStatus.SUCCEEDED, minute=7, finished=at),  # nobody depends on it
    ]
    await seed(uow_factory, [up, lonely, down], runs)
    async with uow_factory() as uow:
        found = await uow.runs.finished_upstream_runs(since=at, limit=10)
        assert [r.id for r in found] == [runs[0].id, runs[1].id, runs[2].id]
        await uow.runs.mark_dependents_resolved([runs[0].id], at=at)
        await uow.commit()
    async with uow_factory() as uow:
        left = await uow.runs.finished_upstream_runs(since=at, limit=10)
        assert [r.id for r in left] == [runs[1].id, runs[2].id]
        marked = await uow.runs.get(runs[0].id)
        assert marked is not None
        assert marked.version == runs[0].version  # marking is not a version change
    async with uow_factory.engine.connect() as connection:
        stamp = await connection.scalar(
            select(task_runs.c.dependents_resolved_at).where(task_runs.c.id == runs[0].id)
        )
    assert stamp is not None


async def test_decisions_for_a_slot(uow_factory: SqlUnitOfWorkFactory) -> None:
    a, b = task("a"), task("b")
    await seed(uow_factory, [a, b], [])
    slot = T0 + timedelta(minutes=1)
    decisions = [
        SlotDecision(
            task_id=a.id,
            slot=slot,
            outcome=SlotOutcome.SKIPPED,
            reason=SkipReason.DEPENDENCY_FAILED,
            at=T0,
        ),
        SlotDecision(task_id=b.id, slot=slot, outcome=SlotOutcome.FIRED, at=T0),
        SlotDecision(task_id=a.id, slot=T0, outcome=SlotOutcome.FIRED, at=T0),
    ]
    async with uow_factory() as uow:
        for decision in decisions:
            await uow.decisions.add(decision)
        await uow.commit()
    async with uow_factory() as uow:
        found = await uow.decisions.for_slot([a.id, b.id], slot)
        assert {d.id for d in found} == {decisions[0].id, decisions[1].id}
        assert await uow.decisions.for_slot([], slot) == []


@pytest.mark.postgres
async def test_locks_skip_rows_another_transaction_holds(
    postgres_uow_factory: SqlUnitOfWorkFactory,
) -> None:
    up = task("up")
    down = task("down", up)
    runs = [
        run(up, RunStatus.SUCCEEDED, minute=1, finished=T0),
        run(up, RunStatus.PENDING, minute=2),
        run(up, RunStatus.QUEUED, minute=3, queue="worker.w1"),
    ]
    await seed(postgres_uow_factory, [up, down], runs)
    async with postgres_uow_factory() as holder, postgres_uow_factory() as other:
        assert await holder.tasks.lock_many([down.id]) == {down.id}
        assert len(await holder.runs.finished_upstream_runs(since=T0, limit=10)) == 1
        assert len(await holder.runs.pending_among([runs[1].id], T0)) == 1
        assert len(await holder.runs.queued_in(["worker.w1"], limit=10)) == 1

        assert await other.tasks.lock_many([down.id, up.id]) == {up.id}
        assert await other.runs.finished_upstream_runs(since=T0, limit=10) == []
        assert await other.runs.pending_among([runs[1].id], T0) == []
        assert await other.runs.queued_in(["worker.w1"], limit=10) == []
