"""The one way in (``RunRelay.outbox``): gates before the write, the caller's runs untouched,
staged or published only once committed, and published after the unit of work is closed."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue, InMemoryTransactionalRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.dependencies import DependencyResolver
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

pytestmark = pytest.mark.timeout(10)


def new_run(task: Task, clock: FakeClock) -> TaskRun:
    return TaskRun(
        task_id=task.id,
        owner_id=task.owner_id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=clock.now(),
        created_at=clock.now(),
        queue=task.queue,
    )


async def test_admitted_runs_are_new_objects_and_the_given_ones_stay_as_they_were(
    tasks: TaskService,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    given = new_run(task, clock)
    async with relay.outbox(uow_factory()) as box:
        admitted = await box.admit([given], tasks=[task])
        [run] = admitted.runs
        await box.uow.runs.add(run, events=[given.created_event(actor="t"), *admitted.events])
        await box.commit()
    assert run is not given
    assert (run.status, run.queued_at) == (RunStatus.QUEUED, START)
    assert (given.status, given.queued_at, given.version) == (RunStatus.PENDING, None, 1)
    assert [m.run_id for m in queue.published] == [given.id]
    assert [m.run_id for m in box.sent.messages] == [given.id]
    assert box.sent.published


async def test_a_held_run_comes_back_postponed_without_changing_the_given_one(
    tasks: TaskService, relay: RunRelay, uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    task = await tasks.create(task_spec(labels=["gpu"]), principal=ALICE)  # no worker has it
    given = new_run(task, clock)
    async with relay.outbox(uow_factory()) as box:
        [run] = (await box.admit([given], tasks=[task])).runs
    assert (run.status, run.not_before) == (RunStatus.PENDING, START + timedelta(seconds=1))
    assert given.not_before is None


@pytest.mark.parametrize("leave", ["without_commit", "by_an_exception"])
async def test_nothing_is_published_unless_the_outbox_committed(
    tasks: TaskService,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
    leave: str,
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    failing = leave == "by_an_exception"
    with pytest.raises(RuntimeError) if failing else contextlib.nullcontext():
        async with relay.outbox(uow_factory()) as box:
            [run] = (await box.admit([new_run(task, clock)], tasks=[task])).runs
            await box.uow.runs.add(run)
            if failing:
                raise RuntimeError("the use case failed after admitting")
    assert queue.published == []
    assert box.sent.messages == []
    assert store.rows("runs") == []


async def test_the_publish_happens_after_the_unit_of_work_is_closed(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    """A publish that waits on the broker must not hold the database connection."""
    seen: list[bool] = []

    class WatchingQueue(InMemoryRunQueue):
        async def publish_many(self, messages: object) -> None:  # type: ignore[override]
            seen.append(uow._tx is None)
            await super().publish_many(messages)  # type: ignore[arg-type]

    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=WatchingQueue())
    task = await tasks.create(task_spec(), principal=ALICE)
    uow = uow_factory()
    async with relay.outbox(uow) as box:
        [run] = (await box.admit([new_run(task, clock)], tasks=[task])).runs
        await box.uow.runs.add(run)
        await box.commit()
        assert seen == []
    assert seen == [True]


async def test_admitted_runs_that_were_not_written_are_not_sent(
    tasks: TaskService,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    async with relay.outbox(uow_factory()) as box:
        first, second = new_run(task, clock), new_run(task, clock)
        second.scheduled_for += timedelta(microseconds=1)
        kept, dropped = (await box.admit([first, second], tasks=[task])).runs
        await box.uow.runs.add(kept)
        box.discard({dropped.id})
        await box.commit()
    assert [m.run_id for m in queue.published] == [kept.id]


async def test_on_a_database_queue_the_messages_are_staged_by_the_commit(
    tasks: TaskService, uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    database_queue = InMemoryTransactionalRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=database_queue)
    task = await tasks.create(task_spec(), principal=ALICE)
    async with relay.outbox(uow_factory()) as box:
        [run] = (await box.admit([new_run(task, clock)], tasks=[task])).runs
        await box.uow.runs.add(run)
        await box.commit()
        assert [m.run_id for m in database_queue.published] == [run.id]  # at the commit
    assert [[m.run_id for m in batch] for batch in database_queue.staged] == [[run.id]]
    assert box.sent.published


async def test_a_dependent_run_is_queued_in_the_transaction_that_creates_it(
    tasks: TaskService,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
) -> None:
    upstream = await tasks.create(task_spec("up"), principal=ALICE)
    dependent = await tasks.create(task_spec("down", depends_on=[upstream.id]), principal=ALICE)
    finished = new_run(upstream, clock)
    finished.status, finished.finished_at = RunStatus.SUCCEEDED, START
    store.put("runs", finished)
    resolver = DependencyResolver(uow_factory=uow_factory, clock=clock, relay=relay)
    commits = store.commits

    report = await resolver.resolve_finished()

    assert store.commits == commits + 1  # created and queued together, not read again
    [run] = [r for r in store.rows("runs") if r.task_id == dependent.id]
    assert run.status is RunStatus.QUEUED
    assert [m.run_id for m in queue.published] == [run.id]
    assert report.published == 1
    assert [e.to_status for e in store.rows("events") if e.run_id == run.id] == [
        RunStatus.PENDING,
        RunStatus.QUEUED,
    ]
