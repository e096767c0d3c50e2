"""Retention: long-offline workers retired (their direct queues deleted once empty), old
finished runs and slot decisions deleted in batches, with the counts kept whole and what a
dependency's fan-in still reads kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, OPERATOR, START, VIEWER_ALICE, task_spec

from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, NotFound, PermissionDenied
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.operations.retention import HistoryRetention, RetentionPolicy
from scheduler_application.ports.queue import RunMessage
from scheduler_application.runs.dependencies import DependencyResolver
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.events import RunEvent, SlotDecision, SlotOutcome
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker, WorkerStatus

pytestmark = pytest.mark.timeout(10)

DAY = timedelta(days=1)


@pytest.fixture
def registry(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, queue: InMemoryRunQueue
) -> WorkerService:
    return WorkerService(uow_factory=uow_factory, clock=clock, queue=queue)


@pytest.fixture
def history(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> HistoryRetention:
    return HistoryRetention(
        uow_factory=uow_factory,
        clock=clock,
        policy=RetentionPolicy(runs=30 * DAY, dead_letters=None, slot_decisions=30 * DAY),
    )


async def register(registry: WorkerService, name: str = "w2") -> Worker:
    return await registry.register(
        RegisterWorker(name=name, hostname="h", pid=1, queues=("default",), capacity=2)
    )


def message(run_id: str, queue: str) -> RunMessage:
    return RunMessage(
        run_id=run_id, task_id="t", attempt=1, token=0, queue=queue, priority=0, enqueued_at=START
    )


# -- workers ---------------------------------------------------------------------------------


async def test_a_worker_offline_longer_than_the_retention_is_retired_with_its_direct_queue(
    registry: WorkerService, store: InMemoryStore, clock: FakeClock, queue: InMemoryRunQueue
) -> None:
    old = await register(registry)
    await registry.deregister(old.id)
    clock.advance(DAY / 2)
    recent = await register(registry)
    await registry.deregister(recent.id)
    live = await register(registry)
    queue.deleted.clear()

    clock.advance(DAY / 2 + timedelta(seconds=1))
    report = await registry.retire_offline(DAY, limit=10)

    assert [w.id for w in report.retired] == [old.id]
    assert {w.id for w in store.rows("workers")} == {recent.id, live.id}
    assert queue.deleted == [old.direct_queue]


async def test_deregistering_deletes_the_direct_queue_only_when_it_is_empty(
    registry: WorkerService, queue: InMemoryRunQueue
) -> None:
    empty, busy = await register(registry, "a"), await register(registry, "b")
    await queue.publish(message("r1", busy.direct_queue))

    await registry.deregister(empty.id)
    await registry.deregister(busy.id)

    assert queue.deleted == [empty.direct_queue]
    assert [m.run_id for m in queue.ready(busy.direct_queue)] == ["r1"]


async def test_duplicates_left_on_a_dead_workers_direct_queue_are_dropped_and_it_is_retired(
    registry: WorkerService,
    tasks: TaskService,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    """The path of a worker killed with a run waiting on its direct queue: the relay re-routes
    the run to a live worker and publishes it again (existing recovery); the message left on
    the dead worker's queue is then a duplicate, and only it is dropped."""
    dead = await register(registry, "dead")
    task = await tasks.create(task_spec(), principal=ALICE)
    run = queued_on(store, task, dead.direct_queue)
    await queue.publish(message(run.id, dead.direct_queue))
    await registry.deregister(dead.id)
    assert queue.deleted == []  # it held a message
    await register(registry, "live")

    moved = await relay.redispatch_orphaned()
    assert [m.run_id for m in moved] == [run.id]
    assert store.row("runs", run.id).queue != dead.direct_queue

    clock.advance(2 * DAY)
    report = await registry.retire_offline(DAY, limit=10)

    assert [w.id for w in report.retired] == [dead.id]
    assert queue.ready(dead.direct_queue) == []
    assert dead.direct_queue in queue.deleted
    # The run's own message, where the relay put it, is untouched.
    new_queue = store.row("runs", run.id).queue
    assert [m.run_id for m in queue.ready(new_queue)] == [run.id]


def queued_on(store: InMemoryStore, task: Task, queue_name: str) -> TaskRun:
    run = TaskRun(
        task_id=task.id,
        owner_id=task.owner_id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=START,
        created_at=START,
        status=RunStatus.QUEUED,
        queue=queue_name,
        queued_at=START,
    )
    store.put("runs", run)
    return run


async def test_a_worker_with_a_run_queued_on_its_direct_queue_is_kept_with_the_message(
    registry: WorkerService,
    tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    worker = await register(registry)
    task = await tasks.create(task_spec(), principal=ALICE)
    run = queued_on(store, task, worker.direct_queue)
    await queue.publish(message(run.id, worker.direct_queue))
    await registry.deregister(worker.id)
    clock.advance(2 * DAY)

    report = await registry.retire_offline(DAY, limit=10)

    assert [(w.id, reason) for w, reason in report.kept] == [
        (worker.id, "runs are queued on its direct queue")
    ]
    assert store.row("workers", worker.id) is not None
    assert [m.run_id for m in queue.ready(worker.direct_queue)] == [run.id]


async def test_the_sweep_puts_back_a_message_whose_run_still_waits_there(
    registry: WorkerService,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    worker = await register(registry)
    task = await tasks.create(task_spec(), principal=ALICE)
    stale = queued_on(store, task, "default")
    waiting = queued_on(store, task, worker.direct_queue)
    await queue.publish(message(stale.id, worker.direct_queue))
    await queue.publish(message(waiting.id, worker.direct_queue))

    assert await registry._sweep_stale(worker.direct_queue) is True

    assert [m.run_id for m in queue.ready(worker.direct_queue)] == [waiting.id]


async def test_runs_keep_the_id_of_a_retired_worker(
    registry: WorkerService,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    from scheduler_application.ports.executor import ExecutionResult

    worker = await register(registry)
    task = await tasks.create(task_spec(), principal=ALICE)
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    claimed = await execution.claim(run.id, worker_id=worker.id)
    assert claimed is not None
    await execution.complete(run.id, claimed.token, ExecutionResult(status="succeeded"))
    await registry.deregister(worker.id)
    clock.advance(2 * DAY)

    assert [w.id for w in (await registry.retire_offline(DAY, limit=10)).retired] == [worker.id]
    kept = store.row("runs", run.id)
    assert (kept.status, kept.worker_id) == (RunStatus.SUCCEEDED, worker.id)


async def test_retirement_goes_a_batch_at_a_time_oldest_first(
    registry: WorkerService, store: InMemoryStore, clock: FakeClock
) -> None:
    gone = []
    for name in ("a", "b", "c"):
        worker = await register(registry, name)
        await registry.deregister(worker.id)
        gone.append(worker.id)
        clock.advance(timedelta(minutes=1))
    clock.advance(2 * DAY)

    first = await registry.retire_offline(DAY, limit=2)
    assert [w.id for w in first.retired] == gone[:2]
    assert [w.id for w in store.rows("workers")] == gone[2:]


async def test_a_worker_that_came_back_is_not_retired(
    registry: WorkerService, execution: ExecutionService, clock: FakeClock, store: InMemoryStore
) -> None:
    worker = await register(registry)
    await registry.deregister(worker.id)
    clock.advance(2 * DAY)
    await execution.heartbeat(worker.id, [])  # it was only partitioned: online again

    assert (await registry.retire_offline(DAY, limit=10)).retired == []
    assert store.row("workers", worker.id).status is WorkerStatus.ONLINE


# -- undrain ---------------------------------------------------------------------------------


async def test_undrain_lets_a_drained_worker_take_work_again(
    workers: WorkerService, execution: ExecutionService, worker: Worker
) -> None:
    await workers.drain(worker.id, principal=OPERATOR)
    assert (await execution.heartbeat(worker.id, [])).status is WorkerStatus.DRAINING

    undrained = await workers.undrain(worker.id, principal=OPERATOR)

    assert undrained.status is WorkerStatus.ONLINE
    assert (await execution.heartbeat(worker.id, [])).status is WorkerStatus.ONLINE


async def test_undrain_of_an_offline_worker_is_a_conflict_and_of_an_unknown_one_not_found(
    workers: WorkerService, worker: Worker
) -> None:
    await workers.deregister(worker.id)
    with pytest.raises(Conflict) as error:
        await workers.undrain(worker.id, principal=OPERATOR)
    assert "offline" in str(error.value)
    assert error.value.field == "worker_id"
    with pytest.raises(NotFound):
        await workers.undrain("nope", principal=OPERATOR)


async def test_only_operators_undrain(workers: WorkerService, worker: Worker) -> None:
    for principal in (ALICE, VIEWER_ALICE):
        with pytest.raises(PermissionDenied):
            await workers.undrain(worker.id, principal=principal)


# -- runs and decisions ------------------------------------------------------------------------


def seed_run(
    store: InMemoryStore, task: Task, status: RunStatus, *, finished: Any, logical_time: Any = START
) -> TaskRun:
    run = TaskRun(
        task_id=task.id,
        owner_id=task.owner_id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=logical_time,
        created_at=START,
        status=status,
        finished_at=None if status.is_active else finished,
    )
    store.put("runs", run)
    store.put(
        "events",
        RunEvent(
            run_id=run.id,
            task_id=task.id,
            from_status=None,
            to_status=status,
            at=START,
            actor="test",
        ),
    )
    return run


async def test_old_finished_runs_go_with_their_events_and_the_counts_stay_whole(
    history: HistoryRetention,
    tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    old = START + timedelta(seconds=1)
    gone = [
        seed_run(store, task, status, finished=old, logical_time=START + timedelta(minutes=i))
        for i, status in enumerate((RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.FAILED))
    ]
    dead = seed_run(store, task, RunStatus.DEAD_LETTERED, finished=old, logical_time=START + DAY)
    live = seed_run(store, task, RunStatus.QUEUED, finished=None, logical_time=START + 2 * DAY)
    clock.advance(29 * DAY)
    recent = seed_run(
        store, task, RunStatus.SUCCEEDED, finished=clock.now(), logical_time=START + 3 * DAY
    )
    async with uow_factory() as uow:
        before = await uow.runs.count_by_status()
    clock.advance(DAY + timedelta(seconds=2))

    purged = await history.purge(limit=100)

    assert sum(purged.runs.values()) == 3
    assert {r.id for r in store.rows("runs")} == {dead.id, live.id, recent.id}
    assert {e.run_id for e in store.rows("events")} == {dead.id, live.id, recent.id}
    async with uow_factory() as uow:
        assert await uow.runs.count_by_status() == before
    assert not {r.id for r in gone} & {r.id for r in store.rows("runs")}


async def test_dead_letters_follow_their_own_retention(
    uow_factory: InMemoryUnitOfWorkFactory,
    tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    dead = seed_run(store, task, RunStatus.DEAD_LETTERED, finished=START)
    clock.advance(100 * DAY)
    keep_for_ever = HistoryRetention(
        uow_factory=uow_factory, clock=clock, policy=RetentionPolicy(dead_letters=None)
    )
    await keep_for_ever.purge(limit=10)
    assert store.row("runs", dead.id) is not None

    ninety = HistoryRetention(
        uow_factory=uow_factory, clock=clock, policy=RetentionPolicy(dead_letters=90 * DAY)
    )
    purged = await ninety.purge(limit=10)
    assert purged.runs[RunStatus.DEAD_LETTERED] == 1
    assert store.row("runs", dead.id) is None


async def test_runs_are_deleted_a_bounded_batch_at_a_time(
    history: HistoryRetention, tasks: TaskService, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    for i in range(5):
        seed_run(
            store,
            task,
            RunStatus.SUCCEEDED,
            finished=START + timedelta(seconds=i),
            logical_time=START + timedelta(minutes=i),
        )
    clock.advance(31 * DAY)

    first = await history.purge(limit=2)
    assert sum(first.runs.values()) == 2
    assert first.more
    assert len(store.rows("runs")) == 3
    await history.purge(limit=2)
    last = await history.purge(limit=2)
    assert sum(last.runs.values()) == 1
    assert not last.more
    assert store.rows("runs") == []


async def test_rows_a_dependency_keeps_do_not_stall_the_walk(
    history: HistoryRetention, tasks: TaskService, store: InMemoryStore, clock: FakeClock
) -> None:
    """The oldest rows are kept (a dependent waits on their logical times): each batch still
    looks at new rows, so the deletable ones behind them go, a bounded batch at a time."""
    upstream = await tasks.create(task_spec("up"), principal=ALICE)
    await tasks.create(task_spec("down", depends_on=[upstream.id]), principal=ALICE)
    plain = await tasks.create(task_spec("plain"), principal=ALICE)
    kept = [
        seed_run(
            store,
            upstream,
            RunStatus.SUCCEEDED,
            finished=START + timedelta(seconds=i),
            logical_time=START + timedelta(minutes=i),
        )
        for i in range(4)
    ]
    gone = [
        seed_run(
            store,
            plain,
            RunStatus.SUCCEEDED,
            finished=START + timedelta(seconds=10 + i),
            logical_time=START + timedelta(minutes=i),
        )
        for i in range(2)
    ]
    clock.advance(31 * DAY)

    steps = [await history.purge(limit=2) for _ in range(4)]

    # A bounded window each time, walked to the end; the loop hurries on only after a batch
    # that deleted something (a stretch of kept rows is walked at the loop's pace).
    assert [sum(step.runs.values()) for step in steps] == [0, 0, 2, 0]
    assert [step.more for step in steps] == [False, False, True, False]
    assert {r.id for r in store.rows("runs")} == {r.id for r in kept}
    assert not {r.id for r in gone} & {r.id for r in store.rows("runs")}
    # The walk starts over: the kept rows are looked at again.
    assert sum((await history.purge(limit=2)).runs.values()) == 0


async def test_an_upstream_run_a_waiting_dependent_still_reads_is_kept(
    history: HistoryRetention,
    tasks: TaskService,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    resolver = DependencyResolver(uow_factory=uow_factory, clock=clock, relay=relay)
    a = await tasks.create(task_spec("a"), principal=ALICE)
    b = await tasks.create(task_spec("b"), principal=ALICE)
    d = await tasks.create(task_spec("d", depends_on=[a.id, b.id]), principal=ALICE)
    unresolved = seed_run(store, a, RunStatus.SUCCEEDED, finished=START + timedelta(seconds=1))
    clock.advance(31 * DAY)
    await history.purge(limit=10)
    assert store.row("runs", unresolved.id) is not None  # its dependents were not evaluated

    clock.set(START + timedelta(seconds=2))
    await resolver.resolve_finished()  # d waits for b
    clock.advance(31 * DAY)
    await history.purge(limit=10)
    assert store.row("runs", unresolved.id) is not None  # d has not decided this logical time

    seed_run(store, b, RunStatus.SUCCEEDED, finished=clock.now())
    await resolver.resolve_finished()
    [d_run] = [r for r in store.rows("runs") if r.task_id == d.id]
    assert d_run.trigger is RunTrigger.DEPENDENCY  # a's old run was there to be read

    await history.purge(limit=10)
    assert store.row("runs", unresolved.id) is None  # d decided: nothing reads it any more


async def test_old_slot_decisions_go_unless_a_dependent_still_reads_them(
    history: HistoryRetention, tasks: TaskService, store: InMemoryStore, clock: FakeClock
) -> None:
    lonely = await tasks.create(task_spec("lonely"), principal=ALICE)
    a = await tasks.create(task_spec("a"), principal=ALICE)
    await tasks.create(task_spec("d", depends_on=[a.id]), principal=ALICE)
    at = START + timedelta(seconds=1)
    plain = SlotDecision(task_id=lonely.id, slot=START, outcome=SlotOutcome.FIRED, at=at)
    read = SlotDecision(task_id=a.id, slot=START, outcome=SlotOutcome.SKIPPED, at=at)
    store.put("decisions", plain)
    store.put("decisions", read)
    clock.advance(31 * DAY)

    purged = await history.purge(limit=10)

    assert purged.decisions == 1
    assert [d.id for d in store.rows("decisions")] == [read.id]


def test_a_retention_is_positive_or_none() -> None:
    with pytest.raises(ValueError, match="runs"):
        RetentionPolicy(runs=timedelta(0))
