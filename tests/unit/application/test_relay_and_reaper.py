from __future__ import annotations

from datetime import timedelta

import pytest
from application_fixtures import ALICE, task_spec

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Unavailable
from scheduler_application.execution.reaper import LeaseReaper
from scheduler_application.execution.service import ExecutionService
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import FakeClock, InMemoryStore
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker


async def test_relay_queues_due_runs_commits_then_publishes(
    pending: PendingRuns,
    relay: RunRelay,
    alice_task: Task,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    run = await pending.trigger(alice_task.id, principal=ALICE)
    [message] = await relay.relay_pending()
    stored = store.row("runs", run.id)
    assert (stored.status, stored.queued_at) == (RunStatus.QUEUED, clock.now())
    assert queue.published == [message]
    assert (message.run_id, message.queue, message.priority, message.token) == (
        run.id,
        "default",
        5,
        stored.version,
    )
    [event] = [e for e in store.rows("events") if e.to_status is RunStatus.QUEUED]
    assert (event.from_status, event.actor) == (RunStatus.PENDING, "relay")
    assert await relay.relay_pending() == []  # nothing pending any more
    assert len(queue.published) == 1


async def test_relay_with_nothing_due_does_not_commit(
    relay: RunRelay, store: InMemoryStore
) -> None:
    assert await relay.relay_pending() == []
    assert store.commits == 0


async def test_broker_outage_after_commit_is_healed_by_republishing_stale_runs(
    pending: PendingRuns,
    relay: RunRelay,
    alice_task: Task,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    run = await pending.trigger(alice_task.id, principal=ALICE)
    queue.unavailable = True
    with pytest.raises(Unavailable):
        await relay.relay_pending()
    assert store.row("runs", run.id).status is RunStatus.QUEUED
    assert queue.published == []
    queue.unavailable = False
    assert await relay.republish_stale_queued(timedelta(seconds=60)) == []  # not stale yet
    clock.advance(seconds=61)
    [message] = await relay.republish_stale_queued(timedelta(seconds=60))
    assert message.run_id == run.id
    assert store.row("runs", run.id).queued_at == clock.now()
    assert await relay.republish_stale_queued(timedelta(seconds=60)) == []  # waits again


async def test_runs_waiting_behind_a_backlog_are_not_published_again(
    runs: RunService,
    relay: RunRelay,
    alice_task: Task,
    queue: InMemoryRunQueue,
    clock: FakeClock,
) -> None:
    """Stale but still in line: the queue holds a message for every queued run, so nothing is
    published twice. Once messages go missing, only that many runs are published again."""
    triggered = [await runs.trigger(alice_task.id, principal=ALICE) for _ in range(3)]
    await relay.relay_pending()
    assert len(queue.ready("default")) == 3
    clock.advance(seconds=61)

    assert await relay.republish_stale_queued(timedelta(seconds=60)) == []
    assert relay.stats["republish_skipped"] == 3
    assert len(queue.ready("default")) == 3

    lost = queue.get_nowait(["default"])  # taken off the queue and never to come back
    assert lost is not None
    await queue.ack(lost)
    [again] = await relay.republish_stale_queued(timedelta(seconds=60))
    assert again.run_id in {run.id for run in triggered}
    assert len(queue.ready("default")) == 3


async def test_relay_publishes_in_priority_order_within_a_queue(
    tasks: TaskService, runs: RunService, relay: RunRelay, queue: InMemoryRunQueue
) -> None:
    urgent = await tasks.create(task_spec("urgent", priority=9), principal=ALICE)
    routine = await tasks.create(task_spec("routine", priority=1), principal=ALICE)
    await runs.trigger(routine.id, principal=ALICE)
    await runs.trigger(urgent.id, principal=ALICE)
    await relay.relay_pending()
    assert [m.task_id for m in queue.ready("default")] == [urgent.id, routine.id]


async def test_reaper_loses_expired_leases_and_schedules_the_retry(
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    reaper: LeaseReaper,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await tasks.create(
        task_spec("reaped", retry={"max_attempts": 2, "base_delay_seconds": 4}), principal=ALICE
    )
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    assert await execution.claim(run.id, worker_id=worker.id) is not None
    clock.advance(seconds=29)
    assert await reaper.reap_expired_leases() == []
    clock.advance(seconds=1)
    [settled] = await reaper.reap_expired_leases()
    lost = store.row("runs", run.id)
    assert (lost.status, lost.error) == (RunStatus.LOST, "lease expired")
    assert settled.retry is not None
    assert settled.retry.not_before == clock.now() + timedelta(seconds=4)
    [event] = [e for e in store.rows("events") if e.to_status is RunStatus.LOST]
    assert (event.from_status, event.actor) == (RunStatus.RUNNING, "reaper")


async def test_reaper_dead_letters_a_lost_last_attempt(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    reaper: LeaseReaper,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    run = await runs.trigger(alice_task.id, principal=ALICE)
    await relay.relay_pending()
    await execution.claim(run.id, worker_id=worker.id)
    clock.advance(timedelta(minutes=1))
    [settled] = await reaper.reap_expired_leases()
    assert settled.dead_lettered
    assert store.row("runs", run.id).status is RunStatus.DEAD_LETTERED
    assert [e.to_status for e in store.rows("events") if e.run_id == run.id][-2:] == [
        RunStatus.LOST,
        RunStatus.DEAD_LETTERED,
    ]
