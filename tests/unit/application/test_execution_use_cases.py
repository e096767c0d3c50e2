from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, NotFound
from scheduler_application.execution.reaper import LeaseReaper
from scheduler_application.execution.service import (
    MAX_LIVE_OUTPUT,
    ActiveRun,
    ClaimedRun,
    ExecutionService,
    OutputChunk,
)
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    FakeRedactor,
    InMemoryStore,
)
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker

FAILED = ExecutionResult(status="failed", error="exit code 1", result={"exit_code": 1})
SUCCEEDED = ExecutionResult(status="succeeded", result={"exit_code": 0}, output="hi\n")


def transitions(store: InMemoryStore, run_id: str) -> list[tuple[Any, Any]]:
    events = sorted((e for e in store.rows("events") if e.run_id == run_id), key=lambda e: e.at)
    return [(e.from_status, e.to_status) for e in events]


async def queued(runs: RunService, relay: RunRelay, task: Task) -> TaskRun:
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    return run


async def claimed(
    runs: RunService, relay: RunRelay, execution: ExecutionService, task: Task, worker: Worker
) -> ClaimedRun:
    run = await queued(runs, relay, task)
    claim = await execution.claim(run.id, worker_id=worker.id)
    assert claim is not None
    return claim


@pytest.fixture
async def retrying_task(tasks: TaskService) -> Task:
    return await tasks.create(
        task_spec(
            "flaky",
            timeout_seconds=60,
            retry={"max_attempts": 3, "base_delay_seconds": 10, "max_delay_seconds": 60},
        ),
        principal=ALICE,
    )


async def test_claim_runs_the_queued_run_and_records_the_event(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    retrying_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    run = await queued(runs, relay, retrying_task)
    claim = await execution.claim(run.id, worker_id=worker.id)
    assert claim is not None
    assert (claim.executor, claim.params, claim.timeout_seconds) == (
        "shell",
        {"argv": ["echo", "hi"]},
        60.0,
    )
    assert claim.token == 2
    assert claim.run.worker_id == worker.id
    stored = store.row("runs", run.id)
    assert stored.status is RunStatus.RUNNING
    assert stored.lease_expires_at == START + timedelta(seconds=30)
    assert transitions(store, run.id)[-1] == (RunStatus.QUEUED, RunStatus.RUNNING)
    context = claim.context()
    assert (context.run_id, context.attempt, context.timeout_seconds) == (run.id, 1, 60.0)


async def test_duplicate_delivery_fails_the_claim(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    run = await queued(runs, relay, alice_task)
    assert await execution.claim(run.id, worker_id=worker.id) is not None
    events = len(store.rows("events"))
    assert await execution.claim(run.id, worker_id="someone-else") is None
    assert len(store.rows("events")) == events


async def test_concurrent_claims_give_the_run_to_exactly_one_worker(
    runs: RunService, relay: RunRelay, execution: ExecutionService, alice_task: Task
) -> None:
    run = await queued(runs, relay, alice_task)
    results = await asyncio.gather(*(execution.claim(run.id, worker_id=f"w{i}") for i in range(4)))
    assert sum(result is not None for result in results) == 1


async def test_a_cancelled_run_cannot_be_claimed(
    runs: RunService, relay: RunRelay, execution: ExecutionService, alice_task: Task
) -> None:
    run = await queued(runs, relay, alice_task)
    await runs.cancel(run.id, principal=ALICE)
    assert await execution.claim(run.id, worker_id="w") is None


async def test_claim_next_takes_the_most_urgent_run_of_the_workers_queues(
    tasks: TaskService, runs: RunService, relay: RunRelay, execution: ExecutionService
) -> None:
    low = await tasks.create(task_spec("low", priority=1), principal=ALICE)
    high = await tasks.create(task_spec("high", priority=9), principal=ALICE)
    other = await tasks.create(task_spec("gpu", queue="gpu", priority=9), principal=ALICE)
    for task in (low, high, other):
        await queued(runs, relay, task)
    first = await execution.claim_next(worker_id="w", queues=["default"])
    second = await execution.claim_next(worker_id="w", queues=["default"])
    third = await execution.claim_next(worker_id="w", queues=["default"])
    assert first is not None
    assert first.run.task_id == high.id
    assert second is not None
    assert second.run.task_id == low.id
    assert third is None


async def test_heartbeat_renews_leases_and_records_the_worker(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    claim = await claimed(runs, relay, execution, alice_task, worker)
    clock.advance(seconds=20)
    reply = await execution.heartbeat(
        worker.id, [ActiveRun(run_id=claim.run.id, token=claim.token)]
    )
    assert reply.stop == []
    assert reply.status.value == "online"
    assert store.row("runs", claim.run.id).lease_expires_at == clock.now() + timedelta(seconds=30)
    stored_worker = store.row("workers", worker.id)
    assert (stored_worker.heartbeat_at, stored_worker.active_runs) == (clock.now(), 1)


async def test_cancelling_a_running_run_makes_the_next_heartbeat_stop_it(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    claim = await claimed(runs, relay, execution, alice_task, worker)
    await runs.cancel(claim.run.id, principal=ALICE)
    reply = await execution.heartbeat(
        worker.id, [ActiveRun(run_id=claim.run.id, token=claim.token)]
    )
    assert reply.stop == [claim.run.id]
    with pytest.raises(Conflict):
        await execution.complete(claim.run.id, claim.token, SUCCEEDED)
    assert store.row("runs", claim.run.id).status is RunStatus.CANCELLED
    assert transitions(store, claim.run.id)[-1] == (RunStatus.RUNNING, RunStatus.CANCELLED)


async def test_runs_to_stop_names_cancelled_runs_and_renews_no_lease(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    kept = await claimed(runs, relay, execution, alice_task, worker)
    cancelled = await claimed(runs, relay, execution, alice_task, worker)
    held = [(kept.run.id, kept.token), (cancelled.run.id, cancelled.token)]
    assert await execution.runs_to_stop(worker.id, held) == []
    assert await execution.runs_to_stop(worker.id, []) == []
    await runs.cancel(cancelled.run.id, principal=ALICE)
    lease = store.row("runs", kept.run.id).lease_expires_at
    clock.advance(seconds=20)

    assert await execution.runs_to_stop(worker.id, held) == [cancelled.run.id]
    assert await execution.runs_to_stop("another-worker", held[:1]) == [kept.run.id]
    assert store.row("runs", kept.run.id).lease_expires_at == lease


async def test_heartbeat_from_an_unregistered_worker_is_not_found(
    execution: ExecutionService,
) -> None:
    with pytest.raises(NotFound):
        await execution.heartbeat("ghost", [])


async def test_complete_success_records_the_outcome_and_its_event(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    claim = await claimed(runs, relay, execution, alice_task, worker)
    clock.advance(seconds=3)
    settled = await execution.complete(claim.run.id, claim.token, SUCCEEDED)
    stored = store.row("runs", claim.run.id)
    assert settled.retry is None
    assert not settled.dead_lettered
    assert (stored.status, stored.result, stored.output) == (
        RunStatus.SUCCEEDED,
        {"exit_code": 0},
        "hi\n",
    )
    assert stored.finished_at == clock.now()
    assert stored.lease_expires_at is None
    assert transitions(store, claim.run.id) == [
        (None, RunStatus.PENDING),
        (RunStatus.PENDING, RunStatus.QUEUED),
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
    ]


async def test_failure_with_attempts_left_adds_a_retry_after_the_backoff(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    retrying_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    claim = await claimed(runs, relay, execution, retrying_task, worker)
    clock.advance(seconds=5)
    commits = store.commits
    settled = await execution.complete(claim.run.id, claim.token, FAILED)
    assert store.commits == commits + 1  # outcome, retry and events in one transaction
    retry = settled.retry
    assert retry is not None
    stored_retry = store.row("runs", retry.id)
    assert (stored_retry.status, stored_retry.trigger, stored_retry.attempt) == (
        RunStatus.PENDING,
        RunTrigger.RETRY,
        2,
    )
    assert stored_retry.retry_of == claim.run.id
    assert stored_retry.not_before == clock.now() + timedelta(seconds=10)
    assert store.row("runs", claim.run.id).error == "exit code 1"
    assert transitions(store, claim.run.id)[-1] == (RunStatus.RUNNING, RunStatus.FAILED)
    assert transitions(store, retry.id) == [(None, RunStatus.PENDING)]


async def test_retry_run_waits_for_backoff_before_publish(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    retrying_task: Task,
    worker: Worker,
    queue: InMemoryRunQueue,
    clock: FakeClock,
) -> None:
    claim = await claimed(runs, relay, execution, retrying_task, worker)
    settled = await execution.complete(claim.run.id, claim.token, FAILED)
    assert settled.retry is not None
    clock.advance(seconds=9)
    assert await relay.relay_pending() == []
    clock.advance(seconds=1)
    [message] = await relay.relay_pending()
    assert (message.run_id, message.attempt) == (settled.retry.id, 2)
    assert queue.published[-1] == message


async def test_backoff_doubles_per_attempt(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    retrying_task: Task,
    worker: Worker,
    clock: FakeClock,
) -> None:
    claim = await claimed(runs, relay, execution, retrying_task, worker)
    first = (await execution.complete(claim.run.id, claim.token, FAILED)).retry
    assert first is not None
    assert first.not_before == clock.now() + timedelta(seconds=10)
    clock.advance(seconds=10)
    await relay.relay_pending()
    second_claim = await execution.claim(first.id, worker_id=worker.id)
    assert second_claim is not None
    second = (await execution.complete(first.id, second_claim.token, FAILED)).retry
    assert second is not None
    assert second.attempt == 3
    assert second.not_before == clock.now() + timedelta(seconds=20)


async def test_last_failed_attempt_is_dead_lettered(
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await tasks.create(
        task_spec("twice", retry={"max_attempts": 2, "base_delay_seconds": 1}), principal=ALICE
    )
    claim = await claimed(runs, relay, execution, task, worker)
    retry = (await execution.complete(claim.run.id, claim.token, FAILED)).retry
    assert retry is not None
    clock.advance(seconds=1)
    await relay.relay_pending()
    last = await execution.claim(retry.id, worker_id=worker.id)
    assert last is not None
    settled = await execution.complete(
        retry.id, last.token, ExecutionResult(status="timed_out", error="timeout after 60s")
    )
    assert settled.dead_lettered
    assert settled.retry is None
    assert store.row("runs", retry.id).status is RunStatus.DEAD_LETTERED
    assert transitions(store, retry.id)[-2:] == [
        (RunStatus.RUNNING, RunStatus.TIMED_OUT),
        (RunStatus.TIMED_OUT, RunStatus.DEAD_LETTERED),
    ]
    assert len(store.rows("runs")) == 2


async def test_stale_token_is_refused_after_the_attempt_was_reaped_and_retried(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    reaper: LeaseReaper,
    workers: WorkerService,
    retrying_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    paused = await claimed(runs, relay, execution, retrying_task, worker)
    clock.advance(seconds=31)  # the worker froze past its lease
    [reaped] = await reaper.reap_expired_leases()
    assert reaped.retry is not None
    clock.advance(seconds=10)
    await relay.relay_pending()
    other = await workers.register(
        RegisterWorker(name="w-2", hostname="host-b", pid=7, queues=("default",), capacity=1)
    )
    replacement = await execution.claim(reaped.retry.id, worker_id=other.id)
    assert replacement is not None
    reply = await execution.heartbeat(
        worker.id, [ActiveRun(run_id=paused.run.id, token=paused.token)]
    )
    assert reply.stop == [paused.run.id]
    with pytest.raises(Conflict) as error:
        await execution.complete(paused.run.id, paused.token, SUCCEEDED)
    assert error.value.field == "token"
    assert store.row("runs", paused.run.id).status is RunStatus.LOST
    await execution.complete(reaped.retry.id, replacement.token, SUCCEEDED)
    assert store.row("runs", reaped.retry.id).status is RunStatus.SUCCEEDED


async def test_a_token_from_before_the_claim_is_refused(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
) -> None:
    claim = await claimed(runs, relay, execution, alice_task, worker)
    with pytest.raises(Conflict):
        await execution.complete(claim.run.id, claim.token - 1, SUCCEEDED)
    with pytest.raises(NotFound):
        await execution.complete("no-such-run", 1, SUCCEEDED)


async def test_release_loses_the_attempt_and_retries_it_at_once(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    retrying_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    claim = await claimed(runs, relay, execution, retrying_task, worker)
    settled = await execution.release(claim.run.id, claim.token)
    lost = store.row("runs", claim.run.id)
    assert (lost.status, lost.error) == (RunStatus.LOST, "released by draining worker")
    assert settled.retry is not None
    assert settled.retry.not_before == clock.now()
    [event] = [e for e in store.rows("events") if e.to_status is RunStatus.LOST]
    assert event.actor == f"worker:{worker.id}"
    assert event.detail["reason"] == "released by draining worker"
    [message] = await relay.relay_pending()
    assert message.run_id == settled.retry.id


async def test_a_failed_commit_leaves_no_trace_of_the_outcome(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    retrying_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    claim = await claimed(runs, relay, execution, retrying_task, worker)
    events_before = store.rows("events")
    store.fail_next_commit = ConnectionError("database went away")
    with pytest.raises(ConnectionError):
        await execution.complete(claim.run.id, claim.token, FAILED)
    assert store.row("runs", claim.run.id).status is RunStatus.RUNNING
    assert len(store.rows("runs")) == 1  # no retry run
    assert store.rows("events") == events_before
    settled = await execution.complete(claim.run.id, claim.token, FAILED)  # the worker retries
    assert settled.retry is not None


async def test_live_output_is_appended_redacted_only_for_the_holder_under_its_token(
    runs: RunService,
    relay: RunRelay,
    uow_factory: Any,
    clock: FakeClock,
    rng: Any,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    execution = ExecutionService(
        uow_factory=uow_factory,
        clock=clock,
        rng=rng,
        executor_policy=OPEN_EXECUTOR_POLICY,
        redactor=FakeRedactor(secrets=("hunter2",)),
    )
    claim = await claimed(runs, relay, execution, alice_task, worker)
    run_id = claim.run.id

    def chunk(text: str, token: int = claim.token) -> OutputChunk:
        return OutputChunk(run_id=run_id, token=token, text=text)

    assert await execution.report_output(worker.id, [chunk("one\n")]) == {run_id}
    assert await execution.report_output(worker.id, [chunk("pw hunter2\n")]) == {run_id}
    assert await execution.report_output("another-worker", [chunk("theirs\n")]) == set()
    assert await execution.report_output(worker.id, [chunk("stale\n", claim.token - 1)]) == set()
    stored = store.row("runs", run_id)
    assert stored.output == "one\npw [REDACTED]\n"
    assert stored.version == claim.token  # nobody's token changed

    too_much = "x" * (MAX_LIVE_OUTPUT - len(stored.output) + 1)
    assert await execution.report_output(worker.id, [chunk(too_much)]) == set()
    await execution.complete(run_id, claim.token, SUCCEEDED)
    assert store.row("runs", run_id).output == "hi\n"  # the outcome's output replaces it
    assert await execution.report_output(worker.id, [chunk("late\n")]) == set()
