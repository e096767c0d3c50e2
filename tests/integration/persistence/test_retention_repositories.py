"""The retention's deletes on SQLite and PostgreSQL: old finished runs (with their events, the
counts kept whole), slot decisions and long-offline workers, in bounded batches, leaving what
a dependency's fan-in still reads."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from test_repository_contract import T0, committed, make_run, make_task, postgres_only, save

from scheduler_application.accounts.access import Principal
from scheduler_application.execution.workers import WorkerService
from scheduler_domain.accounts import Role
from scheduler_domain.events import RunEvent, SlotDecision, SlotOutcome
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import Worker, WorkerStatus
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(60)

DAY = timedelta(days=1)
FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.FAILED})


def finished_run(task, status: RunStatus, *, at, **overrides):  # type: ignore[no-untyped-def]
    return make_run(task, status=status, finished_at=at, **overrides)


async def add_event(uow_factory: SqlUnitOfWorkFactory, run) -> None:  # type: ignore[no-untyped-def]
    async with committed(uow_factory) as uow:
        await uow.events.add(
            RunEvent(
                run_id=run.id,
                task_id=run.task_id,
                from_status=None,
                to_status=run.status,
                at=T0,
                actor="test",
            )
        )


async def test_old_finished_runs_go_with_their_events_and_counts_stay_whole(
    uow_factory: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    task = make_task()
    old = [
        finished_run(task, status, at=T0 + timedelta(seconds=i))
        for i, status in enumerate(
            (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.FAILED)
        )
    ]
    dead = finished_run(task, RunStatus.DEAD_LETTERED, at=T0)
    recent = finished_run(task, RunStatus.SUCCEEDED, at=T0 + 40 * DAY)
    live = make_run(task, status=RunStatus.QUEUED, queued_at=T0)
    await save(uow_factory, task, *old, dead, recent, live)
    for run in (*old, dead):
        await add_event(uow_factory, run)
    async with uow_factory() as uow:
        before = await uow.runs.count_by_status()

    cutoff = T0 + 30 * DAY
    async with committed(uow_factory) as uow:
        first = await uow.runs.purge_finished(before=cutoff, statuses=FINISHED, limit=3)
    async with committed(uow_factory) as uow:
        second = await uow.runs.purge_finished(
            before=cutoff, statuses=FINISHED, limit=3, after=first.last
        )
    async with committed(uow_factory) as uow:
        third = await uow.runs.purge_finished(before=cutoff, statuses=FINISHED, limit=3)

    # Oldest first, a bounded batch at a time, each batch going on where the last stopped.
    assert (first.scanned, first.by_status) == (
        3,
        {RunStatus.SUCCEEDED: 2, RunStatus.CANCELLED: 1},
    )
    assert first.last == (old[2].finished_at, old[2].id)
    assert (second.scanned, second.by_status, second.last) == (1, {RunStatus.FAILED: 1}, None)
    assert (third.scanned, third.deleted) == (0, 0)
    async with uow_factory() as uow:
        for run in old:
            assert await uow.runs.get(run.id) is None
            assert await uow.events.list_for_run(run.id) == []
        for run in (dead, recent, live):
            assert await uow.runs.get(run.id) is not None
        assert len(await uow.events.list_for_run(dead.id)) == 1
        assert await uow.runs.count_by_status() == before
    async with engine.connect() as connection:
        tallies = dict(
            (await connection.execute(text("SELECT status, count FROM run_tallies"))).all()
        )
    assert tallies == {"succeeded": 2, "cancelled": 1, "failed": 1}

    # Dead letters only go when asked for, and add to the same tallies.
    async with committed(uow_factory) as uow:
        dead_batch = await uow.runs.purge_finished(
            before=T0 + DAY, statuses={RunStatus.DEAD_LETTERED}, limit=10
        )
        assert dead_batch.by_status == {RunStatus.DEAD_LETTERED: 1}
    async with uow_factory() as uow:
        assert await uow.runs.count_by_status() == before


async def test_a_run_a_dependent_may_still_read_is_kept(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream, lonely = make_task(), make_task()
    dependent = make_task(depends_on=(upstream.id,))
    unresolved = finished_run(upstream, RunStatus.SUCCEEDED, at=T0 + timedelta(seconds=1))
    undecided = finished_run(upstream, RunStatus.SUCCEEDED, at=T0 + timedelta(seconds=2))
    decided = finished_run(upstream, RunStatus.SUCCEEDED, at=T0 + timedelta(seconds=4))
    plain = finished_run(lonely, RunStatus.SUCCEEDED, at=T0)
    await save(uow_factory, upstream, lonely, dependent, unresolved, undecided, decided, plain)
    async with committed(uow_factory) as uow:
        await uow.runs.mark_dependents_resolved(
            [undecided.id, decided.id], at=T0 + timedelta(seconds=5)
        )
        await uow.decisions.add(
            SlotDecision(
                task_id=dependent.id,
                slot=decided.scheduled_for,
                outcome=SlotOutcome.FIRED,
                at=T0 + timedelta(seconds=5),
            )
        )

    async with committed(uow_factory) as uow:
        batch = await uow.runs.purge_finished(before=T0 + 30 * DAY, statuses=FINISHED, limit=10)

    assert (batch.scanned, batch.by_status) == (4, {RunStatus.SUCCEEDED: 2})
    async with uow_factory() as uow:
        assert await uow.runs.get(plain.id) is None
        assert await uow.runs.get(decided.id) is None
        assert await uow.runs.get(unresolved.id) is not None  # dependents not evaluated yet
        assert await uow.runs.get(undecided.id) is not None  # the dependent waits on its time


async def test_old_slot_decisions_go_unless_a_dependent_still_reads_them(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    upstream, lonely = make_task(), make_task()
    dependent = make_task(depends_on=(upstream.id,))
    await save(uow_factory, upstream, lonely, dependent)
    old = [
        SlotDecision(
            task_id=lonely.id,
            slot=T0 + timedelta(minutes=i),
            outcome=SlotOutcome.FIRED,
            at=T0 + timedelta(seconds=i),
        )
        for i in range(3)
    ]
    read = SlotDecision(task_id=upstream.id, slot=T0, outcome=SlotOutcome.SKIPPED, at=T0)
    recent = SlotDecision(task_id=lonely.id, slot=T0, outcome=SlotOutcome.FIRED, at=T0 + 40 * DAY)
    async with committed(uow_factory) as uow:
        await uow.decisions.add_many([*old, read, recent])

    batches = []
    after = None
    while True:
        async with committed(uow_factory) as uow:
            batch = await uow.decisions.purge(before=T0 + 30 * DAY, limit=2, after=after)
        batches.append(batch)
        after = batch.last
        if after is None:
            break

    assert [b.scanned for b in batches] == [2, 2, 0]  # 4 old ones, two at a time
    assert sum(b.deleted for b in batches) == 3

    async with uow_factory() as uow:
        kept = await uow.decisions.list_for_task(upstream.id, limit=10)
        assert [d.id for d in kept] == [read.id]
        assert [d.id for d in await uow.decisions.list_for_task(lonely.id, limit=10)] == [recent.id]


def make_worker(**overrides: object) -> Worker:
    values: dict[str, object] = {
        "name": "w2",
        "hostname": "h",
        "pid": 1,
        "queues": ("default",),
        "capacity": 1,
        "started_at": T0,
        "heartbeat_at": T0,
    }
    values.update(overrides)
    return Worker(**values)  # type: ignore[arg-type]


async def test_long_offline_workers_are_listed_oldest_first_and_deleted_only_if_still_offline(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    oldest = make_worker(status=WorkerStatus.OFFLINE, heartbeat_at=T0)
    older = make_worker(status=WorkerStatus.OFFLINE, heartbeat_at=T0 + timedelta(hours=1))
    recent = make_worker(status=WorkerStatus.OFFLINE, heartbeat_at=T0 + 2 * DAY)
    silent_but_online = make_worker(heartbeat_at=T0)
    async with committed(uow_factory) as uow:
        for worker in (oldest, older, recent, silent_but_online):
            await uow.workers.add(worker)
    cutoff = T0 + DAY

    async with uow_factory() as uow:
        listed = await uow.workers.offline_since_before(cutoff, limit=10)
        first = await uow.workers.offline_since_before(cutoff, limit=1)
    assert [w.id for w in listed] == [oldest.id, older.id]
    assert [w.id for w in first] == [oldest.id]

    # The worker came back between the listing and the delete: it stays.
    async with committed(uow_factory) as uow:
        back = await uow.workers.get(older.id)
        assert back is not None
        back.record_heartbeat(now=T0 + 3 * DAY, active_runs=0)
        await uow.workers.update(back)
    async with committed(uow_factory) as uow:
        assert await uow.workers.delete_offline(oldest.id, before=cutoff)
        assert not await uow.workers.delete_offline(older.id, before=cutoff)
        assert not await uow.workers.delete_offline(silent_but_online.id, before=cutoff)

    async with uow_factory() as uow:
        assert {w.id for w in await uow.workers.list()} == {
            older.id,
            recent.id,
            silent_but_online.id,
        }


async def test_a_heartbeat_in_flight_does_not_overwrite_an_operators_drain(
    uow_factory: SqlUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    """Both write the whole row: the heartbeat holds it (``get_for_update``) from its read to
    its commit, so the drain waits and then sees the heartbeat's write, not the other way."""
    postgres_only(engine)
    worker = make_worker()
    async with committed(uow_factory) as uow:
        await uow.workers.add(worker)
    registry = WorkerService(uow_factory=uow_factory, clock=SystemClock())
    operator = Principal(subject_id="op", role=Role.OPERATOR)

    async with uow_factory() as heartbeat:
        seen = await heartbeat.workers.get_for_update(worker.id)
        assert seen is not None
        draining = asyncio.create_task(registry.drain(worker.id, principal=operator))
        async with asyncio.timeout(10):
            while not await _waiting_on_a_lock(engine):
                await asyncio.sleep(0.02)
        seen.record_heartbeat(now=T0 + DAY, active_runs=0)
        await heartbeat.workers.update(seen)
        await heartbeat.commit()
    await asyncio.wait_for(draining, timeout=10)

    async with uow_factory() as uow:
        stored = await uow.workers.get(worker.id)
    assert stored is not None
    assert stored.status is WorkerStatus.DRAINING
    assert stored.heartbeat_at == T0 + DAY


async def _waiting_on_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)
