"""Firing ahead: a task whose slot's outcome cannot change before the slot comes (concurrency
``allow``, no ``max_concurrent``) is fired up to ``fire_ahead`` early — its run written and
queued before the slot, delivered at it — so that the slot's lateness no longer includes the
cost of firing it. The other tasks fire at their slot. A pause or a change of schedule before
the slot cancels the runs fired ahead for slots the task no longer has."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue, InMemoryTransactionalRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.events import SkipReason, SlotOutcome
from scheduler_domain.run import RunTrigger
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(10)

MINUTE = timedelta(minutes=1)
AHEAD = timedelta(seconds=2)
_S = timedelta(seconds=1)
SLOT = START + MINUTE  # the first slot of a task created at START, every minute


async def every_minute(tasks: TaskService, name: str, **spec: Any) -> str:
    task = await tasks.create(
        task_spec(name, schedule={"interval_seconds": 60}, **spec), principal=ALICE
    )
    return task.id


def firing_on(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, queue: InMemoryRunQueue
) -> tuple[ScheduleFiring, RunRelay]:
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay, fire_ahead=AHEAD)
    return firing, relay


def runs_of(store: InMemoryStore, task_id: str) -> list[Any]:
    return sorted(
        (r for r in store.rows("runs") if r.task_id == task_id), key=lambda r: r.scheduled_for
    )


async def test_a_slot_is_fired_ahead_queued_early_and_delivered_at_the_slot(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    queue = InMemoryTransactionalRunQueue()
    firing, _ = firing_on(uow_factory, clock, queue)
    task_id = await every_minute(tasks, "ahead")

    clock.set(SLOT - timedelta(seconds=5))
    assert await firing.seconds_until_due(at_most=10) == 3.0  # the slot less fire_ahead
    clock.set(SLOT - timedelta(seconds=2, microseconds=1))
    assert (await firing.fire_due_tasks()).tasks == 0  # not yet within fire_ahead

    now = clock.set(SLOT - timedelta(seconds=1.5))
    report = await firing.fire_due_tasks()

    [run] = runs_of(store, task_id)
    assert report.fired == 1
    assert report.lateness == [timedelta(0)]
    assert (run.scheduled_for, run.created_at, run.trigger) == (SLOT, now, RunTrigger.SCHEDULE)
    assert (run.status, run.queued_at, run.not_before) == (RunStatus.QUEUED, now, SLOT)
    [[message]] = queue.staged
    assert (message.run_id, message.not_before) == (run.id, SLOT)
    [queued] = [e for e in store.rows("events") if e.to_status is RunStatus.QUEUED]
    assert queued.detail["deliver_at"] == "2030-03-01T12:01:00Z"
    [decision] = store.rows("decisions")
    assert (decision.slot, decision.outcome) == (SLOT, SlotOutcome.FIRED)
    assert store.row("tasks", task_id).next_run_at == SLOT + MINUTE
    assert (await firing.fire_due_tasks()).tasks == 0  # the slot fired once


async def test_a_late_task_fires_its_due_slot_and_those_within_fire_ahead(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    firing, _ = firing_on(uow_factory, clock, InMemoryTransactionalRunQueue())
    task = await tasks.create(
        task_spec("every-second", schedule={"interval_seconds": 1}), principal=ALICE
    )
    now = clock.set(START + timedelta(seconds=1.5))  # slot START + 1 s is due (0.5 s late)

    await firing.fire_due_tasks()

    runs = runs_of(store, task.id)
    assert [r.scheduled_for - START for r in runs] == [timedelta(seconds=s) for s in (1, 2, 3)]
    assert [r.not_before for r in runs] == [None, START + timedelta(seconds=2), START + 3 * _S]
    assert all(r.status is RunStatus.QUEUED and r.queued_at == now for r in runs)
    assert store.row("tasks", task.id).next_run_at == START + 4 * _S


@pytest.mark.parametrize(
    "spec", [{"concurrency": "forbid"}, {"concurrency": "replace"}, {"max_concurrent": 3}]
)
async def test_a_task_whose_slot_depends_on_its_active_runs_fires_at_the_slot(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
    spec: dict[str, Any],
) -> None:
    firing, _ = firing_on(uow_factory, clock, InMemoryTransactionalRunQueue())
    task_id = await every_minute(tasks, "at-slot", **spec)

    clock.set(SLOT - timedelta(seconds=5))
    assert await firing.seconds_until_due(at_most=10) == 5.0
    clock.set(SLOT - timedelta(seconds=1))
    assert (await firing.fire_due_tasks()).tasks == 0
    assert runs_of(store, task_id) == []

    clock.set(SLOT)
    assert (await firing.fire_due_tasks()).fired == 1
    [run] = runs_of(store, task_id)
    assert run.created_at == SLOT


async def test_on_a_broker_the_message_is_held_until_the_slot(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    """A queue outside the database cannot hold a message back: the relay publishes it at its
    ``not_before`` (the fake clock stands still; the relay sleeps the real difference)."""
    firing, relay = firing_on(uow_factory, clock, queue)
    task_id = await every_minute(tasks, "broker")
    clock.set(SLOT - timedelta(seconds=0.3))

    report = await firing.fire_due_tasks()

    assert report.fired == 1
    assert queue.published == []
    assert relay.holding == 1
    [run] = runs_of(store, task_id)
    assert run.status is RunStatus.QUEUED
    async with asyncio.timeout(3):
        while not queue.published:
            await asyncio.sleep(0.02)
    [message] = queue.published
    assert (message.run_id, message.not_before) == (run.id, None)
    assert relay.holding == 0


async def test_a_stopping_relay_still_publishes_what_it_holds_for_the_next_seconds(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    firing, relay = firing_on(uow_factory, clock, queue)
    await every_minute(tasks, "graceful")
    clock.set(SLOT - timedelta(seconds=0.3))
    await firing.fire_due_tasks()
    assert queue.published == []

    await relay.aclose()  # waits for the slot (0.3 s of real time), within hold_grace

    assert len(queue.published) == 1
    assert relay.holding == 0


async def test_held_messages_dropped_by_a_stopping_relay_are_published_again_once_stale(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    firing, relay = firing_on(uow_factory, clock, queue)
    task_id = await every_minute(tasks, "stopped")
    clock.set(SLOT - timedelta(seconds=1))
    await firing.fire_due_tasks()
    assert relay.holding == 1

    relay.hold_grace = 0.0
    await relay.aclose()  # the dispatcher dies before the slot (no time to wait for it)

    assert relay.holding == 0
    assert queue.published == []
    clock.set(SLOT + timedelta(seconds=61))
    [message] = await relay.republish_stale_queued(timedelta(seconds=60))
    [run] = runs_of(store, task_id)
    assert message.run_id == run.id
    assert queue.published == [message]


async def test_a_run_fired_ahead_that_a_gate_holds_never_waits_less_than_its_slot(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    """No worker has the task's label: the run is held pending (a second at first), but a
    run fired ahead is never let go before its slot."""
    firing, _ = firing_on(uow_factory, clock, InMemoryTransactionalRunQueue())
    task_id = await every_minute(tasks, "labelled", labels=["gpu"])
    clock.set(SLOT - timedelta(seconds=1.5))

    await firing.fire_due_tasks()

    [run] = runs_of(store, task_id)
    assert (run.status, run.not_before) == (RunStatus.PENDING, SLOT)


async def test_pausing_before_the_slot_cancels_the_run_fired_ahead(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    firing, _ = firing_on(uow_factory, clock, InMemoryTransactionalRunQueue())
    task_id = await every_minute(tasks, "paused")
    clock.set(SLOT - timedelta(seconds=1.5))
    await firing.fire_due_tasks()

    clock.set(SLOT - timedelta(seconds=1))
    await tasks.pause(task_id, principal=ALICE)

    [run] = runs_of(store, task_id)
    assert run.status is RunStatus.CANCELLED
    assert run.error == "task paused before the slot"
    clock.set(SLOT + timedelta(seconds=30))
    await tasks.resume(task_id, principal=ALICE)
    paused = [d for d in store.rows("decisions") if d.reason is SkipReason.PAUSED]
    assert [d.slot for d in paused] == [SLOT]  # the slot is explained as paused


async def test_a_new_schedule_keeps_the_runs_fired_ahead_for_slots_it_still_has(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    firing, _ = firing_on(uow_factory, clock, InMemoryTransactionalRunQueue())
    kept_id = await every_minute(tasks, "kept")
    dropped_id = await every_minute(tasks, "dropped")
    clock.set(SLOT - timedelta(seconds=1.5))
    await firing.fire_due_tasks()

    # Every 30 s still fires at SLOT; every 7 s (from the epoch) does not.
    await tasks.update(kept_id, {"schedule": {"interval_seconds": 30}}, principal=ALICE)
    await tasks.update(dropped_id, {"schedule": {"interval_seconds": 7}}, principal=ALICE)

    [kept] = runs_of(store, kept_id)
    assert kept.status is RunStatus.QUEUED
    assert store.row("tasks", kept_id).next_run_at == SLOT + timedelta(seconds=30)
    [dropped] = runs_of(store, dropped_id)
    assert dropped.status is RunStatus.CANCELLED
    assert dropped.error == "task's schedule changed before the slot"
    clock.set(SLOT)
    report = await firing.fire_due_tasks()
    assert report.duplicates == 0
    assert kept_id not in {run.task_id for run in report.created}


async def test_a_message_held_by_a_dispatcher_that_died_is_published_soon_after_the_slot(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    """Not after ``requeue_after``: a live holder publishes at the slot, so a run fired ahead
    still queued a few seconds after its slot with no message in the queue lost it."""
    firing, relay = firing_on(uow_factory, clock, queue)
    task_id = await every_minute(tasks, "orphaned")
    clock.set(SLOT - timedelta(seconds=1))
    await firing.fire_due_tasks()
    relay.hold_grace = 0.0
    await relay.aclose()  # killed while holding the message
    survivor = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
    past = timedelta(seconds=3)

    clock.set(SLOT + timedelta(seconds=2))
    assert await survivor.republish_held(past) == []
    clock.set(SLOT + timedelta(seconds=4))
    [message] = await survivor.republish_held(past)

    [run] = runs_of(store, task_id)
    assert message.run_id == run.id
    assert queue.published == [message]
    # Published again once: its queued_at moved to now, the usual staleness applies from here.
    assert store.row("runs", run.id).queued_at == clock.now()
    clock.set(SLOT + timedelta(seconds=30))
    assert await survivor.republish_held(past) == []
    assert await survivor.republish_stale_queued(timedelta(seconds=60)) == []


async def test_a_held_run_whose_message_is_in_the_queue_is_not_published_twice(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    """Behind a backlog, not lost: the queue holds as many messages as there are queued runs."""
    firing, relay = firing_on(uow_factory, clock, queue)
    await every_minute(tasks, "backlog")
    clock.set(SLOT - timedelta(seconds=0.2))
    await firing.fire_due_tasks()
    await relay.aclose()  # a graceful stop: publishes it at the slot
    assert len(queue.ready("default")) == 1

    clock.set(SLOT + timedelta(seconds=10))
    assert await relay.republish_held(timedelta(seconds=3)) == []
    assert relay.stats["republish_skipped"] == 1


@pytest.mark.parametrize("how", ["pause", "disable"])
async def test_a_slot_due_but_not_yet_fired_when_the_task_is_paused_is_explained_as_paused(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
    how: str,
) -> None:
    """The dispatcher had not reached the slot yet (it is a few ms behind, or down): the pause
    records it, so that every slot still has a decision. A slot it did fire is not recorded
    again."""
    firing, _ = firing_on(uow_factory, clock, InMemoryTransactionalRunQueue())
    task_id = await every_minute(tasks, "paused-late")
    clock.set(SLOT - timedelta(seconds=1))
    await firing.fire_due_tasks()  # SLOT fired ahead
    clock.set(SLOT + MINUTE + timedelta(seconds=0.5))  # SLOT + 1 min due, not fired

    if how == "pause":
        await tasks.pause(task_id, principal=ALICE)
    else:
        await tasks.update(task_id, {"enabled": False}, principal=ALICE)

    decisions = sorted(store.rows("decisions"), key=lambda d: d.slot)
    assert [(d.slot, d.outcome, d.reason) for d in decisions] == [
        (SLOT, SlotOutcome.FIRED, None),
        (SLOT + MINUTE, SlotOutcome.SKIPPED, SkipReason.PAUSED),
    ]
    clock.set(SLOT + 3 * MINUTE + timedelta(seconds=10))
    await tasks.resume(task_id, principal=ALICE)
    paused = [d.slot for d in store.rows("decisions") if d.reason is SkipReason.PAUSED]
    assert sorted(paused) == [SLOT + MINUTE, SLOT + 2 * MINUTE, SLOT + 3 * MINUTE]


async def test_on_a_queue_in_the_database_nothing_is_held_nor_republished(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    queue = InMemoryTransactionalRunQueue()
    firing, relay = firing_on(uow_factory, clock, queue)
    await every_minute(tasks, "in-database")
    clock.set(SLOT - timedelta(seconds=1))
    await firing.fire_due_tasks()
    assert relay.holding == 0  # the message was written with the run
    queue.get_nowait(["default"])  # taken (the fake does not hold it back: the database does)
    clock.set(SLOT + timedelta(seconds=10))
    assert await relay.republish_held(timedelta(seconds=3)) == []
