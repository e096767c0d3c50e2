"""Runs created by a trigger or a retry pass the relay's gates in the transaction that creates
them: queued and published at once when they may go, left pending for the relay when not."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue, InMemoryTransactionalRunQueue
from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.dispatch.routing import Router
from scheduler_application.execution.service import ExecutionService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.queue import RunMessage
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryRateLimiter,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker, WorkerStatus

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(params=["broker", "database"])
def queue(request: pytest.FixtureRequest) -> InMemoryRunQueue:
    """A queue published to after the commit, and one kept in the database (staged in it)."""
    return InMemoryRunQueue() if request.param == "broker" else InMemoryTransactionalRunQueue()


@pytest.fixture
def relay(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, queue: InMemoryRunQueue
) -> RunRelay:
    return RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        router=Router(worker_timeout=timedelta(seconds=30), rng=random.Random(1)),
        rate_limits=RunRateLimits(limiter=InMemoryRateLimiter()),
    )


@pytest.fixture
def runs(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, relay: RunRelay) -> RunService:
    return RunService(uow_factory=uow_factory, clock=clock, relay=relay)


async def make(tasks: TaskService, **spec: Any) -> Task:
    return await tasks.create(task_spec("job", **spec), principal=ALICE)


async def _until_all_published(relay: RunRelay) -> None:
    """The relay's background retries have emptied its kept messages (within 5 s)."""
    async with asyncio.timeout(5):
        while relay.unpublished:
            await asyncio.sleep(0.01)


def statuses(store: InMemoryStore, run_id: str) -> list[tuple[RunStatus | None, RunStatus]]:
    return [(e.from_status, e.to_status) for e in store.rows("events") if e.run_id == run_id]


async def test_a_trigger_queues_and_publishes_in_one_transaction(
    runs: RunService,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    uow_factory: InMemoryUnitOfWorkFactory,
) -> None:
    task = await make(tasks, queue="reports", priority=7)
    commits = uow_factory.commits

    run = await runs.trigger(task.id, principal=ALICE)

    assert uow_factory.commits == commits + 1
    stored: TaskRun = store.row("runs", run.id)
    assert (run.status, stored.status) == (RunStatus.QUEUED, RunStatus.QUEUED)
    assert stored.queued_at == stored.created_at == START
    assert statuses(store, run.id) == [
        (None, RunStatus.PENDING),
        (RunStatus.PENDING, RunStatus.QUEUED),
    ]
    [message] = queue.published
    assert (message.run_id, message.queue, message.priority) == (run.id, "reports", 7)
    assert message.token == stored.version
    assert queue.ready("reports") == [message]


async def test_only_a_committed_run_is_ever_published(
    runs: RunService, tasks: TaskService, store: InMemoryStore, queue: InMemoryRunQueue
) -> None:
    """Five callers race with one idempotency key: four roll back, and none of their runs
    reaches the queue — neither staged in the transaction nor published after it."""
    task = await make(tasks)
    results = await asyncio.gather(
        *(runs.trigger(task.id, principal=ALICE, idempotency_key="k") for _ in range(5))
    )
    assert len({run.id for run in results}) == 1
    assert [m.run_id for m in queue.published] == [results[0].id]
    assert [run.id for run in store.rows("runs")] == [results[0].id]


async def test_a_rate_limited_trigger_waits_pending_and_is_never_dropped(
    runs: RunService,
    relay: RunRelay,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    clock: FakeClock,
) -> None:
    task = await make(tasks, rate_limit="1/m")
    first = await runs.trigger(task.id, principal=ALICE)
    second = await runs.trigger(task.id, principal=ALICE)

    assert first.status is RunStatus.QUEUED
    held: TaskRun = store.row("runs", second.id)
    assert held.status is RunStatus.PENDING
    assert held.not_before is not None
    assert held.not_before > START
    [postponed] = [e for e in store.rows("events") if e.run_id == second.id][1:]
    assert (postponed.to_status, postponed.detail["reason"]) == (RunStatus.PENDING, "rate_limited")
    assert [m.run_id for m in queue.published] == [first.id]

    clock.advance(seconds=61)
    [message] = await relay.relay_pending()
    assert message.run_id == second.id


async def test_a_task_at_max_concurrent_keeps_the_new_run_pending(
    runs: RunService,
    relay: RunRelay,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    task = await make(tasks, max_concurrent=1)
    first = await runs.trigger(task.id, principal=ALICE)
    second = await runs.trigger(task.id, principal=ALICE)
    assert store.row("runs", second.id).status is RunStatus.PENDING
    assert [m.run_id for m in queue.published] == [first.id]

    execution = ExecutionService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    claimed = await execution.claim(first.id, worker_id="w")
    assert claimed is not None
    await execution.complete(first.id, claimed.token, ExecutionResult(status="succeeded"))
    assert [m.run_id for m in await relay.relay_pending()] == [second.id]


async def test_a_targeted_strategy_routes_the_trigger_to_a_live_workers_queue(
    runs: RunService, tasks: TaskService, store: InMemoryStore, queue: InMemoryRunQueue
) -> None:
    store.put(
        "workers",
        Worker(
            id="id-gpu",
            name="gpu",
            hostname="host",
            pid=1,
            queues=("default",),
            labels=frozenset({"gpu"}),
            capacity=4,
            status=WorkerStatus.ONLINE,
            started_at=START,
            heartbeat_at=START,
        ),
    )
    task = await make(tasks, strategy="least_loaded", labels=["gpu"])
    run = await runs.trigger(task.id, principal=ALICE)
    [message] = queue.published
    assert message.queue == "worker.id-gpu" == store.row("runs", run.id).queue


async def test_a_failed_publish_after_the_commit_is_retried_until_the_broker_takes_it(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    tasks: TaskService,
    store: InMemoryStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker is down: the trigger is still accepted (its run is committed, queued), and
    the relay publishes it in the background as soon as the broker is back — not only once
    the run counts as stale."""
    broker = InMemoryRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=broker)
    relay.retry_delays = (0.01, 0.02)
    runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
    task = await make(tasks)
    broker.unavailable = True

    with caplog.at_level(logging.WARNING, logger="scheduler.relay"):
        run = await runs.trigger(task.id, principal=ALICE)
        second = await runs.trigger(task.id, principal=ALICE)

    assert store.row("runs", run.id).status is RunStatus.QUEUED
    assert broker.published == []
    assert relay.unpublished == 2
    assert "retrying in the background" in caplog.text
    await asyncio.sleep(0.1)  # still down: kept, tried again
    assert relay.unpublished == 2

    broker.unavailable = False
    await _until_all_published(relay)
    assert {m.run_id for m in broker.published} == {run.id, second.id}
    await relay.aclose()


async def test_closing_stops_the_retries_and_leaves_the_runs_to_the_stale_republish(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, tasks: TaskService
) -> None:
    broker = InMemoryRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=broker)
    runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
    task = await make(tasks)
    broker.unavailable = True
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.aclose()

    broker.unavailable = False
    clock.advance(seconds=61)
    [message] = await relay.republish_stale_queued(timedelta(seconds=60))
    assert message.run_id == run.id


async def test_a_database_queue_stages_the_message_in_the_transaction(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, tasks: TaskService
) -> None:
    database_queue = InMemoryTransactionalRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=database_queue)
    runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
    task = await make(tasks)

    run = await runs.trigger(task.id, principal=ALICE)

    [[staged]] = database_queue.staged
    assert staged.run_id == run.id
    assert database_queue.published == [staged]  # by the commit, not by a publish after it


async def test_the_relay_stages_what_it_queues_on_a_database_queue(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, tasks: TaskService
) -> None:
    database_queue = InMemoryTransactionalRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=database_queue)
    pending_only = PendingRuns(uow_factory=uow_factory, clock=clock)
    task = await make(tasks)
    run = await pending_only.trigger(task.id, principal=ALICE)
    assert run.status is RunStatus.PENDING

    [message] = await relay.relay_pending()

    assert database_queue.staged == [[message]]
    assert database_queue.published == [message]


async def test_a_retry_is_queued_and_published_at_once(
    runs: RunService,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    task = await make(tasks)
    first = await runs.trigger(task.id, principal=ALICE)
    execution = ExecutionService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    claimed = await execution.claim(first.id, worker_id="w")
    assert claimed is not None
    await execution.complete(first.id, claimed.token, ExecutionResult(status="failed"))

    retry = await runs.retry(first.id, principal=ALICE)

    assert (retry.status, retry.attempt, retry.retry_of) == (RunStatus.QUEUED, 2, first.id)
    assert [m.run_id for m in queue.published] == [first.id, retry.id]


class _HangingBroker(InMemoryRunQueue):
    """Publishing waits (a broker that is reconnecting) until ``released`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.released = asyncio.Event()

    async def publish_many(self, messages: Sequence[RunMessage]) -> None:
        await self.released.wait()
        await super().publish_many(messages)


async def test_a_hanging_publish_does_not_hold_up_the_trigger(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, tasks: TaskService
) -> None:
    broker = _HangingBroker()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=broker)
    relay.publish_timeout = 0.05
    relay.retry_delays = (0.01, 0.02)
    runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
    task = await make(tasks)

    async with asyncio.timeout(2):
        run = await runs.trigger(task.id, principal=ALICE)
    assert run.status is RunStatus.QUEUED
    assert relay.unpublished == 1

    broker.released.set()
    await _until_all_published(relay)
    assert [m.run_id for m in broker.published] == [run.id]
    await relay.aclose()
