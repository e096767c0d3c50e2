"""Dispatch strategies, re-dispatch from dead workers, max_concurrent and rate limits."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.dispatch.routing import Router
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryRateLimiter,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker, WorkerStatus

pytestmark = pytest.mark.timeout(10)

TIMEOUT = timedelta(seconds=30)


@pytest.fixture
def limiter() -> InMemoryRateLimiter:
    return InMemoryRateLimiter()


@pytest.fixture
def router() -> Router:
    return Router(worker_timeout=TIMEOUT, rng=random.Random(3))


@pytest.fixture
def relay(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    router: Router,
    limiter: InMemoryRateLimiter,
) -> RunRelay:
    return RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        router=router,
        rate_limits=RunRateLimits(
            limiter=limiter, queue_limits={"metered": RateLimit.parse("1/s")}
        ),
    )


def add_worker(
    store: InMemoryStore,
    name: str,
    *,
    queues: tuple[str, ...] = ("default",),
    labels: frozenset[str] = frozenset(),
    capacity: int = 4,
    active: int = 0,
    status: WorkerStatus = WorkerStatus.ONLINE,
) -> Worker:
    worker = Worker(
        id=f"id-{name}",
        name=name,
        hostname="host",
        pid=1,
        queues=queues,
        labels=labels,
        capacity=capacity,
        active_runs=active,
        status=status,
        started_at=START,
        heartbeat_at=START,
    )
    store.put("workers", worker)
    return worker


async def make(tasks: TaskService, name: str = "job", **spec: Any) -> Task:
    return await tasks.create(task_spec(name, **spec), principal=ALICE)


async def trigger(pending: PendingRuns, task: Task, count: int = 1) -> list[TaskRun]:
    return [await pending.trigger(task.id, principal=ALICE) for _ in range(count)]


def queued_event_detail(store: InMemoryStore, run_id: str) -> dict[str, Any]:
    [event] = [
        e for e in store.rows("events") if e.run_id == run_id and e.to_status is RunStatus.QUEUED
    ]
    return event.detail


# -- strategies ------------------------------------------------------------------------------


async def test_queue_strategy_publishes_to_the_task_queue(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    add_worker(store, "w1")
    task = await make(tasks, queue="reports")
    await trigger(pending, task)
    [message] = await relay.relay_pending()
    assert message.queue == "reports"
    assert "worker_id" not in queued_event_detail(store, message.run_id)


async def test_round_robin_spreads_runs_evenly_and_records_the_worker(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    workers = [add_worker(store, f"w{i}") for i in range(3)]
    task = await make(tasks, strategy="round_robin")
    await trigger(pending, task, 9)
    messages = await relay.relay_pending()
    counts = Counter(m.queue for m in messages)
    assert counts == {w.direct_queue: 3 for w in workers}
    first_three = {m.queue for m in messages[:3]}
    assert len(first_three) == 3  # a full cycle before any worker gets a second run
    detail = queued_event_detail(store, messages[0].run_id)
    assert detail["strategy"] == "round_robin"
    assert messages[0].queue == f"worker.{detail['worker_id']}"
    assert store.row("runs", messages[0].run_id).queue == messages[0].queue


async def test_round_robin_stays_even_across_batches_and_a_dispatcher_restart(
    tasks: TaskService,
    pending: PendingRuns,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
) -> None:
    for i in range(4):
        add_worker(store, f"w{i}")
    task = await make(tasks, strategy="round_robin")
    counts: Counter[str] = Counter()
    for restart in range(6):  # each batch on a fresh dispatcher (a restart)
        relay = RunRelay(
            uow_factory=uow_factory,
            clock=clock,
            queue=queue,
            router=Router(rng=random.Random(restart)),
        )
        await trigger(pending, task, 6)
        counts.update(m.queue for m in await relay.relay_pending())
    assert sum(counts.values()) == 36
    assert max(counts.values()) - min(counts.values()) <= 4


async def test_targeted_strategies_respect_labels_queues_and_liveness(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    gpu = add_worker(store, "gpu", labels=frozenset({"gpu", "linux"}))
    add_worker(store, "cpu", labels=frozenset({"linux"}))
    add_worker(store, "other-queue", queues=("batch",), labels=frozenset({"gpu"}))
    add_worker(store, "draining", labels=frozenset({"gpu"}), status=WorkerStatus.DRAINING)
    add_worker(store, "offline", labels=frozenset({"gpu"}), status=WorkerStatus.OFFLINE)
    silent = add_worker(store, "silent", labels=frozenset({"gpu"}))
    silent.heartbeat_at = START - timedelta(minutes=5)
    store.put("workers", silent)
    clock.advance(seconds=5)
    for strategy in ("round_robin", "least_loaded", "random"):
        task = await make(tasks, f"train-{strategy}", labels=["gpu"], strategy=strategy)
        await trigger(pending, task, 3)
    messages = await relay.relay_pending()
    assert {m.queue for m in messages} == {gpu.direct_queue}


async def test_no_live_worker_for_a_targeted_strategy_falls_back_to_the_task_queue(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    """Without required labels any worker of the queue may run it: it is not held back."""
    add_worker(store, "elsewhere", queues=("reports",))
    task = await make(tasks, strategy="least_loaded")
    await trigger(pending, task)
    [message] = await relay.relay_pending()
    assert message.queue == "default"
    assert queued_event_detail(store, message.run_id)["fallback"] == "no eligible worker"
    assert relay.stats["routed_fallback"] == 1


@pytest.mark.parametrize("strategy", ["queue", "least_loaded", "round_robin", "random"])
async def test_a_run_no_worker_may_take_waits_pending_until_one_with_its_labels_comes(
    strategy: str,
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    add_worker(store, "cpu")
    task = await make(tasks, labels=["gpu"], strategy=strategy)
    [run] = await trigger(pending, task)

    assert await relay.relay_pending() == []
    held: TaskRun = store.row("runs", run.id)
    assert held.status is RunStatus.PENDING
    assert held.not_before == START + timedelta(seconds=1)
    [waiting] = [e for e in store.rows("events") if e.run_id == run.id][1:]
    assert waiting.detail["reason"] == "no_eligible_worker"
    assert waiting.detail["labels"] == ["gpu"]

    clock.advance(seconds=5)
    assert await relay.relay_pending() == []  # still nobody: it waits longer each time
    assert store.row("runs", run.id).not_before == START + timedelta(
        seconds=7, microseconds=500_000
    )

    gpu = add_worker(store, "gpu", labels=frozenset({"gpu"}))
    gpu.heartbeat_at = clock.now()
    store.put("workers", gpu)
    clock.advance(seconds=3)
    [message] = await relay.relay_pending()
    assert message.queue == gpu.direct_queue
    assert queued_event_detail(store, run.id)["worker_id"] == gpu.id


async def test_under_the_queue_strategy_a_labelled_task_goes_only_to_a_worker_with_its_labels(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    add_worker(store, "cpu-1")
    gpu = add_worker(store, "gpu", labels=frozenset({"gpu", "ssd"}))
    add_worker(store, "cpu-2")
    task = await make(tasks, labels=["gpu"])
    await trigger(pending, task, 4)
    messages = await relay.relay_pending()
    assert {m.queue for m in messages} == {gpu.direct_queue}


async def test_least_loaded_prefers_free_slots_and_counts_what_it_sent(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    busy = add_worker(store, "busy", capacity=4, active=3)
    idle = add_worker(store, "idle", capacity=4, active=0)
    task = await make(tasks, strategy="least_loaded")
    await trigger(pending, task, 5)
    messages = await relay.relay_pending()
    # idle has 4 free, busy 1: idle takes three, then both have one free slot left.
    assert [m.queue for m in messages[:3]] == [idle.direct_queue] * 3
    assert Counter(m.queue for m in messages) == {idle.direct_queue: 4, busy.direct_queue: 1}


async def test_random_picks_among_the_eligible_workers(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    workers = [add_worker(store, f"w{i}") for i in range(3)]
    task = await make(tasks, strategy="random")
    await trigger(pending, task, 30)
    counts = Counter(m.queue for m in await relay.relay_pending())
    assert set(counts) == {w.direct_queue for w in workers}


# -- re-dispatch -----------------------------------------------------------------------------


async def test_runs_waiting_on_a_dead_workers_queue_are_routed_again(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    workers: WorkerService,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    doomed = add_worker(store, "doomed")
    task = await make(tasks, strategy="round_robin")
    await trigger(pending, task)
    [first] = await relay.relay_pending()
    assert first.queue == doomed.direct_queue
    assert await relay.redispatch_orphaned() == []  # its worker is alive
    survivor = add_worker(store, "survivor")
    clock.advance(seconds=45)
    fresh = store.row("workers", survivor.id)
    fresh.heartbeat_at = clock.now()
    store.put("workers", fresh)
    assert [w.id for w in await workers.mark_silent_offline(TIMEOUT)] == [doomed.id]

    [moved] = await relay.redispatch_orphaned()

    assert (moved.run_id, moved.queue) == (first.run_id, survivor.direct_queue)
    run = store.row("runs", first.run_id)
    assert (run.status, run.queue, run.queued_at) == (
        RunStatus.QUEUED,
        survivor.direct_queue,
        clock.now(),
    )
    [event] = [
        e for e in store.rows("events") if e.run_id == run.id and e.from_status is RunStatus.QUEUED
    ]
    assert event.detail["from_queue"] == doomed.direct_queue
    assert event.detail["worker_id"] == survivor.id
    assert relay.stats["redispatched"] == 1


async def test_a_redispatched_run_without_live_workers_goes_to_the_task_queue(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, store: InMemoryStore
) -> None:
    doomed = add_worker(store, "doomed")
    task = await make(tasks, strategy="random")
    await trigger(pending, task)
    await relay.relay_pending()
    gone = store.row("workers", doomed.id)
    gone.status = WorkerStatus.OFFLINE
    store.put("workers", gone)
    [moved] = await relay.redispatch_orphaned()
    assert moved.queue == "default"


# -- max_concurrent --------------------------------------------------------------------------


async def test_max_concurrent_keeps_extra_runs_pending_until_a_slot_frees(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    execution: ExecutionService,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    task = await make(tasks, max_concurrent=2)
    await trigger(pending, task, 5)
    first = await relay.relay_pending()
    assert len(first) == 2
    assert relay.stats["held_max_concurrent"] == 3
    assert await relay.relay_pending() == []
    claimed = await execution.claim(first[0].run_id, worker_id=worker.id)
    assert claimed is not None
    assert await relay.relay_pending() == []  # running still counts
    await execution.complete(first[0].run_id, claimed.token, ExecutionResult(status="succeeded"))
    assert len(await relay.relay_pending()) == 1
    statuses = Counter(r.status for r in store.rows("runs"))
    assert statuses == {RunStatus.SUCCEEDED: 1, RunStatus.QUEUED: 2, RunStatus.PENDING: 2}


async def test_a_full_tasks_backlog_does_not_hold_up_other_tasks(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay
) -> None:
    busy = await make(tasks, "busy", max_concurrent=1)
    calm = await make(tasks, "calm")
    await trigger(pending, busy, 10)
    calm_runs = await trigger(pending, calm, 2)
    first = await relay.relay_pending(limit=4)
    assert [m.task_id for m in first] == [busy.id]
    second = await relay.relay_pending(limit=4)
    assert {m.run_id for m in second} == {r.id for r in calm_runs}


# -- rate limits -----------------------------------------------------------------------------


async def test_a_labelled_run_no_worker_may_take_is_held_without_spending_a_token(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
    limiter: InMemoryRateLimiter,
) -> None:
    task = await make(tasks, labels=["gpu"], rate_limit="1/m")
    [run] = await trigger(pending, task)
    assert await relay.relay_pending() == []
    assert store.row("runs", run.id).status is RunStatus.PENDING
    assert relay.stats["held_no_eligible_worker"] == 1
    assert limiter.granted == []  # the hold came first
    assert limiter.delayed == []

    gpu = add_worker(store, "gpu", labels=frozenset({"gpu"}))
    gpu.heartbeat_at = clock.advance(seconds=2)
    store.put("workers", gpu)
    [message] = await relay.relay_pending()
    assert message.queue == gpu.direct_queue
    assert limiter.granted == [f"task:{task.id}"]  # the one token, spent when it went


async def test_a_rate_limited_run_is_delayed_not_dropped(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
    limiter: InMemoryRateLimiter,
) -> None:
    task = await make(tasks, rate_limit="2/m")
    created = await trigger(pending, task, 5)
    first = await relay.relay_pending()
    assert len(first) == 2  # the bucket's burst
    waiting = [store.row("runs", r.id) for r in created if r.id not in {m.run_id for m in first}]
    assert [r.status for r in waiting] == [RunStatus.PENDING] * 3
    # Spaced one token apart (30 s at 2/m) behind the first wait, not all at once.
    assert sorted(r.not_before - clock.now() for r in waiting) == [
        timedelta(seconds=30),
        timedelta(seconds=60),
        timedelta(seconds=90),
    ]
    events = [e for e in store.rows("events") if e.detail.get("reason") == "rate_limited"]
    assert len(events) == 3
    assert {(e.from_status, e.to_status) for e in events} == {(RunStatus.PENDING,) * 2}
    assert events[0].detail["bucket"] == f"task:{task.id}"
    assert relay.stats["rate_limited"] == 3
    assert len(limiter.delayed) == 1  # the later ones were spaced without asking again

    clock.advance(seconds=30)
    assert len(await relay.relay_pending()) == 1
    clock.advance(seconds=30)
    assert len(await relay.relay_pending()) == 1
    clock.advance(seconds=30)
    assert len(await relay.relay_pending()) == 1
    assert all(r.status is RunStatus.QUEUED for r in store.rows("runs"))


async def test_a_queue_rate_limit_applies_to_every_task_of_the_queue(
    tasks: TaskService, pending: PendingRuns, relay: RunRelay, clock: FakeClock
) -> None:
    one = await make(tasks, "one", queue="metered")
    two = await make(tasks, "two", queue="metered")
    await trigger(pending, one)
    await trigger(pending, two)
    assert len(await relay.relay_pending()) == 1
    clock.advance(seconds=1)
    assert len(await relay.relay_pending()) == 1
