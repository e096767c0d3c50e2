from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, START, VIEWER_ALICE, task_spec

from pending_runs import PendingRuns
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, NotFound, PermissionDenied
from scheduler_application.execution.service import ExecutionService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import FakeClock, InMemoryStore
from scheduler_domain.errors import ValidationError
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker


async def test_trigger_creates_a_manual_run_at_now_queued_at_once(
    runs: RunService, alice_task: Task, store: InMemoryStore, clock: FakeClock
) -> None:
    clock.advance(seconds=5)
    run = await runs.trigger(alice_task.id, principal=ALICE)
    stored: TaskRun = store.row("runs", run.id)
    assert (stored.status, stored.trigger, stored.attempt) == (
        RunStatus.QUEUED,
        RunTrigger.MANUAL,
        1,
    )
    assert stored.scheduled_for == stored.created_at == START + timedelta(seconds=5)
    assert stored.owner_id == "alice"
    assert stored.not_before is None
    [event, queued] = store.rows("events")
    assert (event.run_id, event.from_status, event.to_status) == (run.id, None, RunStatus.PENDING)
    assert event.actor == "user:alice"
    assert (queued.from_status, queued.to_status, queued.actor) == (
        RunStatus.PENDING,
        RunStatus.QUEUED,
        "relay",
    )


async def test_trigger_may_name_an_earlier_logical_time(
    runs: RunService, alice_task: Task, store: InMemoryStore, clock: FakeClock
) -> None:
    clock.advance(seconds=5)
    earlier = (START - timedelta(days=1)).astimezone(timezone(timedelta(hours=2)))
    run = await runs.trigger(alice_task.id, principal=ALICE, logical_time=earlier)
    stored: TaskRun = store.row("runs", run.id)
    assert stored.scheduled_for == START - timedelta(days=1)
    assert stored.scheduled_for.utcoffset() == timedelta(0)
    assert stored.created_at == START + timedelta(seconds=5)
    with pytest.raises(Conflict) as taken:
        await runs.trigger(alice_task.id, principal=ALICE, logical_time=earlier)
    assert taken.value.field == "logical_time"


@pytest.mark.parametrize(
    "logical_time",
    [START.replace(tzinfo=None), START + timedelta(seconds=1)],
    ids=["naive", "future"],
)
async def test_trigger_refuses_a_naive_or_future_logical_time(
    runs: RunService, alice_task: Task, store: InMemoryStore, logical_time: datetime
) -> None:
    with pytest.raises(ValidationError) as refused:
        await runs.trigger(alice_task.id, principal=ALICE, logical_time=logical_time)
    assert refused.value.field == "logical_time"
    assert store.rows("runs") == []


async def test_trigger_with_the_same_key_returns_the_same_run(
    runs: RunService, alice_task: Task, store: InMemoryStore, clock: FakeClock
) -> None:
    first = await runs.trigger(alice_task.id, principal=ALICE, idempotency_key="order-17")
    clock.advance(seconds=1)
    second = await runs.trigger(alice_task.id, principal=ALICE, idempotency_key="order-17")
    other = await runs.trigger(alice_task.id, principal=ALICE, idempotency_key="order-18")
    assert second.id == first.id
    assert other.id != first.id
    assert len(store.rows("runs")) == 2


async def test_racing_triggers_with_one_key_create_one_run(
    runs: RunService, alice_task: Task, store: InMemoryStore
) -> None:
    results = await asyncio.gather(
        *(runs.trigger(alice_task.id, principal=ALICE, idempotency_key="k") for _ in range(5))
    )
    assert len({run.id for run in results}) == 1
    assert len(store.rows("runs")) == 1
    assert store.rollbacks >= 1  # the losers did insert, and hit the unique key at commit


async def test_two_triggers_in_one_clock_tick_get_distinct_logical_times(
    runs: RunService, alice_task: Task
) -> None:
    first = await runs.trigger(alice_task.id, principal=ALICE)
    second = await runs.trigger(alice_task.id, principal=ALICE)
    assert first.scheduled_for != second.scheduled_for


async def test_trigger_validates_the_key(runs: RunService, alice_task: Task) -> None:
    with pytest.raises(ValidationError) as error:
        await runs.trigger(alice_task.id, principal=ALICE, idempotency_key="x" * 201)
    assert error.value.field == "idempotency_key"


async def test_another_users_task_cannot_be_triggered(
    runs: RunService, alice_task: Task, store: InMemoryStore
) -> None:
    with pytest.raises(NotFound):
        await runs.trigger(alice_task.id, principal=BOB)
    with pytest.raises(PermissionDenied):
        await runs.trigger(alice_task.id, principal=VIEWER_ALICE)
    assert store.rows("runs") == []


async def test_another_users_run_is_not_found_for_every_action(
    runs: RunService, alice_task: Task
) -> None:
    run = await runs.trigger(alice_task.id, principal=ALICE)
    for action in (runs.get, runs.cancel, runs.retry, runs.events):
        with pytest.raises(NotFound):
            await action(run.id, principal=BOB)
    assert (await runs.get(run.id, principal=OPERATOR)).id == run.id
    assert (await runs.get(run.id, principal=VIEWER_ALICE)).id == run.id


async def test_list_shows_own_runs_newest_first_with_filters(
    runs: RunService, tasks: object, alice_task: Task, clock: FakeClock
) -> None:
    older = await runs.trigger(alice_task.id, principal=ALICE)
    clock.advance(seconds=1)
    newer = await runs.trigger(alice_task.id, principal=ALICE)
    await runs.cancel(older.id, principal=ALICE)
    page = await runs.list(principal=ALICE)
    assert [r.id for r in page.items] == [newer.id, older.id]
    cancelled = await runs.list(principal=ALICE, statuses=[RunStatus.CANCELLED])
    assert [r.id for r in cancelled.items] == [older.id]
    assert (await runs.list(principal=BOB)).items == []
    assert len((await runs.list(principal=OPERATOR)).items) == 2
    with pytest.raises(NotFound):
        await runs.list(principal=BOB, task_id=alice_task.id)


async def test_list_filters_by_the_queue_a_run_was_published_to(
    runs: RunService, tasks: TaskService, alice_task: Task
) -> None:
    reports = await tasks.create(task_spec("reports", queue="reports"), principal=ALICE)
    in_default = await runs.trigger(alice_task.id, principal=ALICE)
    in_reports = await runs.trigger(reports.id, principal=ALICE)

    listed = await runs.list(principal=ALICE, queue="reports")
    assert [r.id for r in listed.items] == [in_reports.id]
    assert [r.id for r in (await runs.list(principal=ALICE, queue="default")).items] == [
        in_default.id
    ]
    assert (await runs.list(principal=BOB, queue="reports")).items == []


async def test_cancel_moves_a_pending_run_to_cancelled_with_its_event(
    runs: RunService, pending: PendingRuns, alice_task: Task, store: InMemoryStore
) -> None:
    run = await pending.trigger(alice_task.id, principal=ALICE)
    cancelled = await runs.cancel(run.id, principal=ALICE)
    assert store.row("runs", run.id).status is RunStatus.CANCELLED
    assert cancelled.version == 2
    events = await runs.events(run.id, principal=ALICE)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, RunStatus.PENDING),
        (RunStatus.PENDING, RunStatus.CANCELLED),
    ]


async def test_cancel_of_a_final_run_is_a_conflict(
    runs: RunService, alice_task: Task, store: InMemoryStore
) -> None:
    run = await runs.trigger(alice_task.id, principal=ALICE)
    await runs.cancel(run.id, principal=ALICE)
    commits = store.commits
    with pytest.raises(Conflict) as error:
        await runs.cancel(run.id, principal=ALICE)
    assert error.value.field == "status"
    assert store.commits == commits


async def test_retry_of_a_failed_run_adds_the_next_attempt(
    runs: RunService,
    relay: RunRelay,
    execution: ExecutionService,
    alice_task: Task,
    worker: Worker,
    store: InMemoryStore,
) -> None:
    run = await runs.trigger(alice_task.id, principal=ALICE)
    await relay.relay_pending()
    claimed = await execution.claim(run.id, worker_id=worker.id)
    assert claimed is not None
    settled = await execution.complete(
        run.id, claimed.token, ExecutionResult(status="failed", error="exit 1")
    )
    assert settled.dead_lettered  # the default policy has one attempt
    retry = await runs.retry(run.id, principal=ALICE)
    assert (retry.trigger, retry.attempt, retry.retry_of) == (RunTrigger.RETRY, 2, run.id)
    assert retry.scheduled_for == run.scheduled_for
    assert retry.status is RunStatus.QUEUED
    assert retry.not_before is None
    again = await runs.retry(run.id, principal=ALICE)
    assert again.attempt == 3
    assert [e.to_status for e in store.rows("events") if e.run_id == retry.id] == [
        RunStatus.PENDING,
        RunStatus.QUEUED,
    ]


async def test_retry_of_a_cancelled_run_is_allowed_but_not_of_a_live_one(
    runs: RunService, alice_task: Task
) -> None:
    live = await runs.trigger(alice_task.id, principal=ALICE)
    with pytest.raises(Conflict):
        await runs.retry(live.id, principal=ALICE)
    await runs.cancel(live.id, principal=ALICE)
    retry = await runs.retry(live.id, principal=ALICE)
    assert retry.retry_of == live.id
    assert retry.attempt == 2


async def test_latest_statuses_leave_out_tasks_the_caller_may_not_see(
    runs: RunService,
    pending: PendingRuns,
    tasks: TaskService,
    alice_task: Task,
    clock: FakeClock,
) -> None:
    bobs = await tasks.create(task_spec(name="bobs"), principal=BOB)
    first = await pending.trigger(alice_task.id, principal=ALICE)
    clock.advance(seconds=1)
    second = await pending.trigger(alice_task.id, principal=ALICE)
    theirs = await pending.trigger(bobs.id, principal=BOB)
    ids = [alice_task.id, bobs.id]

    mine = await runs.latest_statuses(ids, principal=VIEWER_ALICE)
    everyone = await runs.latest_statuses(ids, principal=OPERATOR, per_task=1)

    assert mine == {alice_task.id: [(second.id, RunStatus.PENDING), (first.id, RunStatus.PENDING)]}
    assert everyone == {
        alice_task.id: [(second.id, RunStatus.PENDING)],
        bobs.id: [(theirs.id, RunStatus.PENDING)],
    }
    assert await runs.latest_statuses([], principal=ALICE) == {}
