"""The batched worker protocol: many claims or outcomes in one transaction, each answered as the
one-at-a-time call would have answered it."""

from __future__ import annotations

import copy
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from scheduler_application.dispatch.gates import DISPATCHED_FIELDS
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, Contended, NotFound
from scheduler_application.execution.retries import Settlement
from scheduler_application.execution.service import (
    OUTCOME_FIELDS,
    ClaimedRun,
    ExecutionService,
    Outcome,
)
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker

SUCCEEDED = ExecutionResult(status="succeeded", result={"exit_code": 0}, output="ok\n")
FAILED = ExecutionResult(status="failed", error="exit code 1", result={"exit_code": 1})


def history(store: InMemoryStore, run_id: str) -> list[tuple[Any, Any]]:
    events = sorted((e for e in store.rows("events") if e.run_id == run_id), key=lambda e: e.at)
    return [(e.from_status, e.to_status) for e in events]


async def queued_runs(runs: RunService, relay: RunRelay, task: Task, count: int) -> list[TaskRun]:
    triggered = [await runs.trigger(task.id, principal=ALICE) for _ in range(count)]
    await relay.relay_pending()
    return triggered


async def claim_all(
    execution: ExecutionService, runs: list[TaskRun], worker: Worker
) -> list[ClaimedRun]:
    claimed = await execution.claim_many([run.id for run in runs], worker_id=worker.id)
    return [claimed[run.id] for run in runs]


def outcome(claim: ClaimedRun, result: ExecutionResult, *, keep_copy: bool = True) -> Outcome:
    return Outcome(
        run_id=claim.run.id,
        token=claim.token,
        result=result,
        run=claim.run if keep_copy else None,
    )


@pytest.fixture
async def flaky_task(tasks: TaskService) -> Task:
    return await tasks.create(
        task_spec("flaky", retry={"max_attempts": 2, "base_delay_seconds": 10}),
        principal=ALICE,
    )


async def test_claim_many_claims_every_queued_run_in_one_transaction(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    batch = await queued_runs(runs, relay, alice_task, 3)
    commits = store.commits
    claimed = await execution.claim_many([run.id for run in batch], worker_id=worker.id)
    assert store.commits == commits + 1
    assert set(claimed) == {run.id for run in batch}
    for run in batch:
        claim = claimed[run.id]
        assert (claim.executor, claim.params) == ("shell", {"argv": ["echo", "hi"]})
        assert claim.token == 2
        stored = store.row("runs", run.id)
        assert (stored.status, stored.worker_id) == (RunStatus.RUNNING, worker.id)
        assert stored.lease_expires_at == START + timedelta(seconds=30)
        assert history(store, run.id)[-1] == (RunStatus.QUEUED, RunStatus.RUNNING)


async def test_claim_many_leaves_out_duplicates_cancelled_and_unknown_runs(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    first, cancelled, fresh = await queued_runs(runs, relay, alice_task, 3)
    assert await execution.claim(first.id, worker_id="another-worker") is not None
    await runs.cancel(cancelled.id, principal=ALICE)
    claimed = await execution.claim_many(
        [first.id, cancelled.id, "no-such-run", fresh.id, fresh.id], worker_id=worker.id
    )
    assert list(claimed) == [fresh.id]
    claims = [e for e in store.rows("events") if e.to_status is RunStatus.RUNNING]
    assert sorted(e.run_id for e in claims) == sorted([first.id, fresh.id])
    assert await execution.claim_many([], worker_id=worker.id) == {}


async def test_claim_many_that_loses_a_race_claims_one_by_one(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    batch = await queued_runs(runs, relay, alice_task, 2)
    store.fail_next_commit = Conflict("could not serialize access")
    claimed = await execution.claim_many([run.id for run in batch], worker_id=worker.id)
    assert set(claimed) == {run.id for run in batch}
    for run in batch:
        claims = [e for e in store.rows("events") if e.to_status is RunStatus.RUNNING]
        assert [e.run_id for e in claims].count(run.id) == 1


async def test_complete_many_records_every_outcome_in_one_transaction(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    flaky_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    ok, failing = await claim_all(execution, await queued_runs(runs, relay, flaky_task, 2), worker)
    clock.advance(seconds=2)
    commits = store.commits
    answers = await execution.complete_many([outcome(ok, SUCCEEDED), outcome(failing, FAILED)])
    assert store.commits == commits + 1
    done, retried = answers
    assert isinstance(done, Settlement)
    assert isinstance(retried, Settlement)
    assert done.retry is None
    stored = store.row("runs", ok.run.id)
    assert (stored.status, stored.result, stored.output) == (
        RunStatus.SUCCEEDED,
        {"exit_code": 0},
        "ok\n",
    )
    assert (stored.finished_at, stored.lease_expires_at) == (clock.now(), None)
    assert history(store, ok.run.id) == [
        (None, RunStatus.PENDING),
        (RunStatus.PENDING, RunStatus.QUEUED),
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.SUCCEEDED),
    ]
    assert retried.retry is not None
    retry = store.row("runs", retried.retry.id)
    assert (retry.status, retry.trigger, retry.attempt, retry.retry_of) == (
        RunStatus.PENDING,
        RunTrigger.RETRY,
        2,
        failing.run.id,
    )
    assert retry.not_before == clock.now() + timedelta(seconds=10)
    assert history(store, retry.id) == [(None, RunStatus.PENDING)]


async def test_complete_many_dead_letters_the_last_attempt_with_both_events_in_order(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    [claim] = await claim_all(execution, await queued_runs(runs, relay, alice_task, 1), worker)
    [answer] = await execution.complete_many([outcome(claim, FAILED)])
    assert isinstance(answer, Settlement)
    assert answer.dead_lettered
    assert store.row("runs", claim.run.id).status is RunStatus.DEAD_LETTERED
    assert history(store, claim.run.id)[-2:] == [
        (RunStatus.RUNNING, RunStatus.FAILED),
        (RunStatus.FAILED, RunStatus.DEAD_LETTERED),
    ]


async def test_a_stale_or_unknown_outcome_is_refused_alone(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    ok, stale = await claim_all(execution, await queued_runs(runs, relay, alice_task, 2), worker)
    answers = await execution.complete_many(
        [
            outcome(ok, SUCCEEDED, keep_copy=False),
            Outcome(run_id=stale.run.id, token=stale.token - 1, result=SUCCEEDED),
            Outcome(run_id="no-such-run", token=2, result=SUCCEEDED),
        ]
    )
    assert isinstance(answers[0], Settlement)
    assert isinstance(answers[1], Conflict)
    assert answers[1].field == "token"
    assert isinstance(answers[2], NotFound)
    assert store.row("runs", ok.run.id).status is RunStatus.SUCCEEDED
    assert store.row("runs", stale.run.id).status is RunStatus.RUNNING


async def test_a_claimed_copy_gone_stale_is_caught_at_the_write_and_decided_afresh(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    ok, cancelled = await claim_all(
        execution, await queued_runs(runs, relay, alice_task, 2), worker
    )
    await runs.cancel(cancelled.run.id, principal=ALICE)  # the worker's copy says running
    commits = store.commits
    answers = await execution.complete_many([outcome(ok, SUCCEEDED), outcome(cancelled, SUCCEEDED)])
    assert store.commits == commits + 1  # the first try rolled back, the second committed
    assert isinstance(answers[0], Settlement)
    assert isinstance(answers[1], Conflict)
    assert store.row("runs", ok.run.id).status is RunStatus.SUCCEEDED
    assert store.row("runs", cancelled.run.id).status is RunStatus.CANCELLED
    finishes = [e for e in store.rows("events") if e.to_status is RunStatus.SUCCEEDED]
    assert [e.run_id for e in finishes] == [ok.run.id]


async def test_an_outcome_keeps_a_lease_renewal_that_landed_after_the_claim(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    [claim] = await claim_all(execution, await queued_runs(runs, relay, alice_task, 1), worker)
    clock.advance(seconds=10)
    await execution.heartbeat(worker.id, [(claim.run.id, claim.token)])
    clock.advance(seconds=1)
    await execution.complete_many([outcome(claim, SUCCEEDED)])
    stored = store.row("runs", claim.run.id)
    assert stored.status is RunStatus.SUCCEEDED
    assert stored.heartbeat_at == START + timedelta(seconds=10)


async def test_an_outage_fails_the_whole_batch_and_leaves_no_trace(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    claims = await claim_all(execution, await queued_runs(runs, relay, alice_task, 2), worker)
    events = store.rows("events")
    store.fail_next_commit = ConnectionError("database went away")
    with pytest.raises(ConnectionError):
        await execution.complete_many([outcome(claim, SUCCEEDED) for claim in claims])
    assert store.rows("events") == events
    answers = await execution.complete_many([outcome(claim, SUCCEEDED) for claim in claims])
    assert all(isinstance(answer, Settlement) for answer in answers)


async def test_outcomes_written_at_once_that_lose_a_race_are_decided_again_in_a_transaction(
    runs: RunService,
    relay: RunRelay,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    """A deadlock PostgreSQL broke (``Contended``) failed the one statement and wrote nothing:
    the outcomes are decided again and written, never answered with the lost race."""
    execution = ExecutionService(
        uow_factory=uow_factory,
        clock=clock,
        executor_policy=OPEN_EXECUTOR_POLICY,
        statement_uow_factory=uow_factory,
    )
    claims = await claim_all(execution, await queued_runs(runs, relay, alice_task, 3), worker)
    store.fail_next_commit = Contended("the run was changed concurrently: deadlock detected")
    answers = await execution.complete_many([outcome(claim, SUCCEEDED) for claim in claims])
    assert all(isinstance(answer, Settlement) for answer in answers), answers
    assert store.fail_next_commit is None  # the statement did lose the race
    for claim in claims:
        assert store.row("runs", claim.run.id).status is RunStatus.SUCCEEDED
        assert history(store, claim.run.id)[-1] == (RunStatus.RUNNING, RunStatus.SUCCEEDED)
        assert [to for _, to in history(store, claim.run.id)].count(RunStatus.SUCCEEDED) == 1


async def test_update_many_with_fields_writes_only_those(
    runs: RunService,
    relay: RunRelay,
    alice_task: Task,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
) -> None:
    [run] = await queued_runs(runs, relay, alice_task, 1)
    async with uow_factory() as uow:
        [read] = await uow.runs.get_many([run.id, "no-such-run", run.id])
        read.queue = "elsewhere"
        read.priority = 9
        await uow.runs.update_many([(read, read.version)], fields=["queue"])
        with pytest.raises(Conflict):
            await uow.runs.update_many([(read, read.version + 1)], fields=["queue"])
        await uow.commit()
    stored = store.row("runs", run.id)
    assert (stored.queue, stored.priority) == ("elsewhere", run.priority)


def _changed(before: TaskRun, after: TaskRun) -> set[str]:
    return {
        f.name
        for f in dataclasses.fields(TaskRun)
        if getattr(before, f.name) != getattr(after, f.name)
    }


def test_the_batched_writes_cover_every_field_their_transitions_change() -> None:
    """``update_many(fields=…)`` writes only the named fields: a transition that starts
    changing another one must be added to the list, or the change would be lost."""
    run = TaskRun(
        task_id="t", owner_id="o", trigger=RunTrigger.MANUAL, scheduled_for=START, created_at=START
    )
    queued = copy.deepcopy(run)
    queued.queue = "q2"
    queued.mark_queued(now=START)
    queued.not_before = START
    assert _changed(run, queued) <= set(DISPATCHED_FIELDS)

    claimed = copy.deepcopy(queued)
    claimed.claim(worker_id="w", now=START, lease=timedelta(seconds=30))
    for result in (SUCCEEDED, FAILED):
        finished = copy.deepcopy(claimed)
        finished.finish(
            RunStatus(result.status),
            token=finished.version,
            now=START + timedelta(seconds=1),
            result=result.result,
            error=result.error,
            output=result.output,
        )
        if finished.failed_attempt:
            assert finished.next_attempt(policy=RetryPolicy(), now=START) is None
            finished.dead_letter(now=START)
        assert _changed(claimed, finished) <= set(OUTCOME_FIELDS)


class TaskReadsCounted(InMemoryUnitOfWorkFactory):
    """Units of work that count the reads of tasks."""

    def __init__(self, store: InMemoryStore) -> None:
        super().__init__(store)
        self.task_reads = 0

    def __call__(self) -> Any:
        uow = super().__call__()
        get_many = uow.tasks.get_many

        async def counted(task_ids: Any) -> Any:
            self.task_reads += 1
            return await get_many(task_ids)

        uow.tasks.get_many = counted  # type: ignore[method-assign]
        return uow


async def test_a_success_carrying_its_claims_task_is_recorded_without_reading_the_task(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    first, second = await claim_all(
        execution, await queued_runs(runs, relay, alice_task, 2), worker
    )
    assert first.task is not None
    assert first.task.id == alice_task.id
    counted = TaskReadsCounted(store)
    completing = ExecutionService(uow_factory=counted, clock=clock)
    with_task = dataclasses.replace(outcome(first, SUCCEEDED), task=first.task)
    [answer] = await completing.complete_many([with_task])
    assert isinstance(answer, Settlement)
    assert store.row("runs", first.run.id).status is RunStatus.SUCCEEDED
    assert counted.task_reads == 0
    [answer] = await completing.complete_many([outcome(second, SUCCEEDED)])  # no task kept
    assert isinstance(answer, Settlement)
    assert counted.task_reads == 1
