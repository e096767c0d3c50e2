"""Firing against the real databases: once per slot with concurrent dispatchers, the unique key
as the last guard, max_concurrent across relays, and the scheduler loop's sleep and wake-ups."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from dispatcher_stack import OWNER, dispatcher_stack, running_worker
from sqlalchemy.ext.asyncio import AsyncEngine

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    RecordingObserver,
)
from scheduler_dispatcher.loops import PeriodicLoop
from scheduler_dispatcher.scheduler_loop import SchedulerLoop
from scheduler_domain.events import SkipReason
from scheduler_domain.schedules import format_instant
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.task_changes import TaskChangeListener
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(90)

START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


async def test_fired_slots_decisions_and_next_run_at_are_stored(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    clock = FakeClock(START)
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    task = await tasks.create(
        {
            "name": "every-minute",
            "executor": "noop",
            "schedule": {"interval_seconds": 60},
            "concurrency": "forbid",
            "misfire": {"policy": "skip", "grace_seconds": 30},
        },
        principal=OWNER,
    )
    queue = InMemoryRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    clock.set(START + 5 * MINUTE + timedelta(seconds=2))

    report = await firing.fire_due_tasks()

    assert report.fired == 1
    assert report.skipped == {SkipReason.MISFIRE: 4}
    assert [m.task_id for m in queue.published] == [task.id]
    clock.set(START + 6 * MINUTE)
    second = await firing.fire_due_tasks()
    assert second.skipped == {SkipReason.FORBID: 1}
    preview = await tasks.schedule_preview(task.id, principal=OWNER, decisions=10)
    assert Counter(d.reason for d in preview.recent_decisions) == {
        None: 1,
        SkipReason.MISFIRE: 4,
        SkipReason.FORBID: 1,
    }
    assert (await tasks.get(task.id, principal=OWNER)).next_run_at == START + 7 * MINUTE


async def test_slots_passed_while_paused_are_stored_as_paused_decisions_on_resume(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    clock = FakeClock(START)
    observer = RecordingObserver()
    tasks = TaskService(
        uow_factory=uow_factory,
        clock=clock,
        observer=observer,
        executor_policy=OPEN_EXECUTOR_POLICY,
    )
    task = await tasks.create(
        {"name": "pausable", "executor": "noop", "schedule": {"interval_seconds": 60}},
        principal=OWNER,
    )
    await tasks.pause(task.id, principal=OWNER)
    clock.set(START + 60 * MINUTE + timedelta(seconds=10))  # 60 slots pass while paused

    resumed = await tasks.resume(task.id, principal=OWNER)

    assert resumed.next_run_at == START + 61 * MINUTE
    assert observer.skipped == {"paused": 60}
    async with uow_factory() as uow:
        stored = await uow.decisions.list_for_task(task.id, limit=100)
        assert (await uow.tasks.get(task.id)).enabled  # type: ignore[union-attr]
    assert {d.reason for d in stored} == {SkipReason.PAUSED}
    assert len(stored) == 51  # the newest 50 one by one, the 10 before them in one
    newest_first = [d.slot for d in stored if not d.detail.get("aggregated")]
    assert newest_first == [START + n * MINUTE for n in range(60, 10, -1)]
    [aggregated] = [d for d in stored if d.detail.get("aggregated")]
    assert aggregated.slot == START + MINUTE
    assert aggregated.detail == {"aggregated": True, "until": "2030-03-01T12:10:00Z", "count": 10}
    # The firing path then only sees the slots after the resume: no misfire for the pause.
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=InMemoryRunQueue())
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    clock.set(START + 61 * MINUTE)
    report = await firing.fire_due_tasks()
    assert (report.fired, report.skipped) == (1, {})


@pytest.mark.postgres
async def test_concurrent_dispatchers_on_postgres_never_create_a_slot_twice(
    postgres_uow_factory: SqlUnitOfWorkFactory,
) -> None:
    uow_factory = postgres_uow_factory
    clock = FakeClock(START)
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    ids = [
        (
            await tasks.create(
                {
                    "name": f"t{index}",
                    "executor": "noop",
                    "schedule": {"interval_seconds": 60},
                    "misfire": {"policy": "catch_up", "catch_up_cap": 10, "grace_seconds": 0},
                },
                principal=OWNER,
            )
        ).id
        for index in range(40)
    ]
    clock.set(START + 3 * MINUTE)
    dispatchers = [
        ScheduleFiring(
            uow_factory=uow_factory,
            clock=clock,
            relay=RunRelay(uow_factory=uow_factory, clock=clock, queue=InMemoryRunQueue()),
        )
        for _ in range(4)
    ]

    reports = await asyncio.gather(*(d.fire_due_tasks(batch=7) for d in dispatchers * 3))

    assert sum(r.tasks for r in reports) == 40
    async with uow_factory() as uow:
        runs = [run for task_id in ids for run in await uow.runs.active_for_task(task_id)]
    slots = Counter((run.task_id, run.scheduled_for) for run in runs)
    assert len(runs) == 40 * 3
    assert max(slots.values()) == 1

    # A dispatcher acting on a stale next_run_at (say, restored from a backup) hits the unique
    # (task, slot, attempt) key: duplicates are counted, nothing is created, no batch aborts.
    async with uow_factory() as uow:
        for task_id in ids:
            await uow.tasks.set_next_run_at(task_id, START + MINUTE)
        await uow.commit()
    replays = await asyncio.gather(*(d.fire_due_tasks(batch=15) for d in dispatchers))
    assert sum(r.duplicates for r in replays) == 40 * 3
    assert sum(r.fired for r in replays) == 0
    async with uow_factory() as uow:
        counts = [len(await uow.runs.active_for_task(t)) for t in ids]
        assert sum(counts) == 40 * 3
        assert (await uow.tasks.get(ids[0])).next_run_at == START + 4 * MINUTE  # type: ignore[union-attr]


@pytest.mark.postgres
async def test_max_concurrent_holds_across_concurrent_relays_on_postgres(
    postgres_uow_factory: SqlUnitOfWorkFactory,
) -> None:
    uow_factory = postgres_uow_factory
    clock = FakeClock(START)
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    runs = PendingRuns(uow_factory=uow_factory, clock=clock)
    task = await tasks.create(
        {"name": "capped", "executor": "noop", "max_concurrent": 3}, principal=OWNER
    )
    for _ in range(30):
        await runs.trigger(task.id, principal=OWNER)
    queue = InMemoryRunQueue()
    relays = [RunRelay(uow_factory=uow_factory, clock=clock, queue=queue) for _ in range(4)]
    for _ in range(3):
        await asyncio.gather(*(r.relay_pending(limit=5) for r in relays))
    assert len(queue.published) == 3
    async with uow_factory() as uow:
        assert await uow.runs.count_in_flight([task.id]) == {task.id: 3}


async def test_the_scheduler_sleeps_until_the_next_slot_and_wakes_on_a_task_change(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """The loop may sleep 30 s; a task created meanwhile and due in 0.5 s fires on time, woken
    by the in-process signal the stack wraps its TaskService with."""
    async with dispatcher_stack(uow_factory, max_sleep=timedelta(seconds=30)) as stack:
        await asyncio.sleep(0.3)  # the loop is asleep now, with nothing scheduled
        due = stack.clock.now() + timedelta(seconds=0.5)
        task_id = await stack.create_task(
            "soon", executor="noop", schedule={"at": format_instant(due)}
        )

        async def published() -> bool:
            runs = await stack.runs_of(task_id)
            return bool(runs) and runs[0].queued_at is not None

        await stack.wait_for(published, within=5)
        [run] = await stack.runs_of(task_id)
        assert run.scheduled_for == due
        assert run.queued_at is not None
        assert run.queued_at - due < timedelta(seconds=1)
        assert stack.signal.notified >= 1


@pytest.mark.postgres
async def test_postgres_notify_wakes_a_dispatcher_in_another_process(
    postgres_engine: AsyncEngine, postgres_uow_factory: SqlUnitOfWorkFactory
) -> None:
    """No in-process signal here: the task is written through a plain TaskService (as another
    process would), and the LISTEN adapter wakes the sleeping scheduler."""
    uow_factory = postgres_uow_factory
    listener = TaskChangeListener(postgres_engine)

    def listening(scheduler: SchedulerLoop) -> list[PeriodicLoop]:
        async def listen() -> bool:
            await listener.listen(scheduler.wake)
            return False

        return [
            PeriodicLoop(
                "task-changes", listen, interval=timedelta(seconds=1), stop_grace=timedelta(0)
            )
        ]

    async with dispatcher_stack(
        uow_factory, max_sleep=timedelta(seconds=30), extra_loops=listening
    ) as stack:
        await asyncio.sleep(0.5)
        other_process = TaskService(
            uow_factory=uow_factory, clock=stack.clock, executor_policy=OPEN_EXECUTOR_POLICY
        )
        due = stack.clock.now() + timedelta(seconds=0.5)
        task = await other_process.create(
            {"name": "elsewhere", "executor": "noop", "schedule": {"at": format_instant(due)}},
            principal=OWNER,
        )

        async def published() -> bool:
            runs = await stack.runs_of(task.id)
            return bool(runs) and runs[0].queued_at is not None

        await stack.wait_for(published, within=5)
        [run] = await stack.runs_of(task.id)
        assert run.queued_at is not None
        assert run.queued_at - due < timedelta(seconds=1)
        assert listener.notifications >= 1
        # The dispatcher's own next_run_at updates do not notify (version does not move).
        seen = listener.notifications
        async with uow_factory() as uow:
            await uow.tasks.set_next_run_at(task.id, None)
            await uow.commit()
        await asyncio.sleep(0.3)
        assert listener.notifications == seen


async def test_a_slot_fired_ahead_starts_on_a_worker_at_the_slot_not_before(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """With fire-ahead the run is written and queued ~2 s early, on a queue outside the
    database (the memory broker): the relay holds its message, the worker starts it at the
    slot."""
    async with (
        dispatcher_stack(uow_factory, fire_ahead=timedelta(seconds=2)) as stack,
        running_worker(stack.worker()),
    ):
        due = (stack.clock.now() + timedelta(seconds=3)).replace(microsecond=0)
        due += timedelta(seconds=1)
        task_id = await stack.create_task(
            "ahead", executor="noop", schedule={"at": format_instant(due)}
        )

        async def queued() -> bool:
            runs = await stack.runs_of(task_id)
            return bool(runs) and runs[0].status is RunStatus.QUEUED

        await stack.wait_for(queued, within=5)
        assert stack.clock.now() < due
        [early] = await stack.runs_of(task_id)
        assert early.not_before == due

        async def done() -> bool:
            runs = await stack.runs_of(task_id)
            return bool(runs) and runs[0].status.is_final

        await stack.wait_for(done, within=10)
        [run] = await stack.runs_of(task_id)
        assert run.status is RunStatus.SUCCEEDED
        assert run.queued_at is not None
        assert run.queued_at < due
        assert run.started_at is not None
        assert due <= run.started_at < due + timedelta(seconds=1)


@pytest.mark.postgres
async def test_a_pause_racing_a_firing_tick_waits_for_it_and_explains_only_what_it_left(
    postgres_uow_factory: SqlUnitOfWorkFactory,
) -> None:
    """The pause reads the task with its row locked: it waits for the tick that holds the row,
    then sees the slot fired (``next_run_at`` advanced) and records no ``paused`` decision for
    it — read without the lock, it would have recorded the slot as paused and fired."""
    uow_factory = postgres_uow_factory
    clock = FakeClock(START)
    tasks = TaskService(uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY)
    task = await tasks.create(
        {"name": "racing", "executor": "noop", "schedule": {"interval_seconds": 60}},
        principal=OWNER,
    )
    clock.set(START + MINUTE + timedelta(seconds=0.5))
    async with uow_factory() as tick:
        [claimed] = await tick.tasks.due(clock.now(), limit=10)
        assert claimed.id == task.id
        pause = asyncio.create_task(tasks.pause(task.id, principal=OWNER))
        await asyncio.sleep(0.5)
        assert not pause.done()  # waiting for the row
        await tick.tasks.set_next_run_at(task.id, START + 2 * MINUTE)  # the slot fired
        await tick.commit()
    paused = await asyncio.wait_for(pause, timeout=10)
    assert paused.paused
    async with uow_factory() as uow:
        assert await uow.decisions.list_for_task(task.id, limit=10) == []


async def test_scheduled_runs_execute_on_a_worker_with_round_robin(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    async with dispatcher_stack(uow_factory) as stack:
        async with running_worker(stack.worker()) as one, running_worker(stack.worker()) as two:
            task_id = await stack.create_task("spread-out", executor="noop", strategy="round_robin")
            for _ in range(6):
                await stack.runs.trigger(task_id, principal=OWNER)
            stack.dispatcher.loop("relay").wake()

            async def all_done() -> bool:
                runs = await stack.runs_of(task_id)
                return len(runs) == 6 and all(r.status.is_final for r in runs)

            await stack.wait_for(all_done)
        runs = await stack.runs_of(task_id)
        assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
        by_worker = Counter(r.worker_id for r in runs)
        assert by_worker == {one.worker.id: 3, two.worker.id: 3}  # type: ignore[union-attr]
        assert {r.queue for r in runs} == {
            f"worker.{one.worker.id}",  # type: ignore[union-attr]
            f"worker.{two.worker.id}",  # type: ignore[union-attr]
        }
