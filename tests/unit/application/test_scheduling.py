"""Firing schedules: slots, misfire and concurrency policies, spread, pauses, DST, races."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService
from scheduler_application.runs.scheduling import (
    MAX_MISSED_DECISIONS,
    ScheduleFiring,
    due_slots,
    record_paused_slots,
    schedule_key,
)
from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
    RecordingObserver,
)
from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.misfire import MisfireKind, MisfirePolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import CronSchedule, IntervalSchedule
from scheduler_domain.spread import spread_offset
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import Worker

pytestmark = pytest.mark.timeout(10)

MINUTE = timedelta(minutes=1)
EVERY_MINUTE = {"interval_seconds": 60}


@pytest.fixture
def firing(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, relay: RunRelay
) -> ScheduleFiring:
    return ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)


async def scheduled(tasks: TaskService, name: str = "tick", **spec: Any) -> Task:
    spec.setdefault("schedule", EVERY_MINUTE)
    return await tasks.create(task_spec(name, **spec), principal=ALICE)


def runs_of(store: InMemoryStore, task_id: str) -> list[TaskRun]:
    return sorted(
        (r for r in store.rows("runs") if r.task_id == task_id), key=lambda r: r.scheduled_for
    )


def decisions_of(store: InMemoryStore, task_id: str) -> list[SlotDecision]:
    return sorted(
        (d for d in store.rows("decisions") if d.task_id == task_id), key=lambda d: d.slot
    )


def skipped(store: InMemoryStore, task_id: str, reason: SkipReason) -> list[SlotDecision]:
    return [d for d in decisions_of(store, task_id) if d.reason is reason]


# -- firing on time --------------------------------------------------------------------------


async def test_due_slot_fires_one_run_publishes_it_and_advances_next_run_at(
    tasks: TaskService,
    firing: ScheduleFiring,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks)
    slot = START + MINUTE
    clock.set(slot + timedelta(milliseconds=300))

    report = await firing.fire_due_tasks()

    [run] = runs_of(store, task.id)
    assert (run.trigger, run.scheduled_for, run.attempt) == (RunTrigger.SCHEDULE, slot, 1)
    assert run.idempotency_key == schedule_key(slot) == "schedule:2030-03-01T12:01:00Z"
    assert run.status is RunStatus.QUEUED
    assert [m.run_id for m in queue.published] == [run.id]
    assert report.fired == 1
    assert report.published == 1
    assert report.lateness == [timedelta(milliseconds=300)]
    assert store.row("tasks", task.id).next_run_at == slot + MINUTE
    [decision] = decisions_of(store, task.id)
    assert (decision.outcome, decision.slot, decision.run_id) == (SlotOutcome.FIRED, slot, run.id)
    events = [e for e in store.rows("events") if e.run_id == run.id]
    assert [(e.to_status, e.actor) for e in sorted(events, key=lambda e: e.at)] == [
        (RunStatus.PENDING, "scheduler"),
        (RunStatus.QUEUED, "relay"),
    ]

    again = await firing.fire_due_tasks()
    assert (again.tasks, again.fired) == (0, 0)
    assert len(runs_of(store, task.id)) == 1


async def test_nothing_due_reads_only_and_commits_nothing(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore
) -> None:
    await scheduled(tasks)
    commits = store.commits
    report = await firing.fire_due_tasks()
    assert report.tasks == 0
    assert store.commits == commits


async def test_seconds_until_due_is_capped_and_never_negative(
    tasks: TaskService, firing: ScheduleFiring, clock: FakeClock
) -> None:
    assert await firing.seconds_until_due(at_most=5.0) == 5.0  # no scheduled task at all
    await scheduled(tasks)
    assert await firing.seconds_until_due(at_most=5.0) == 5.0
    clock.set(START + MINUTE - timedelta(seconds=2))
    assert await firing.seconds_until_due(at_most=5.0) == 2.0
    clock.set(START + 2 * MINUTE)
    assert await firing.seconds_until_due(at_most=5.0) == 0.0


async def test_a_once_schedule_fires_once_then_has_no_next_run(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    at = START + timedelta(hours=1)
    task = await scheduled(tasks, schedule={"at": at.isoformat()})
    clock.set(at)
    await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [at]
    assert store.row("tasks", task.id).next_run_at is None


async def test_a_batch_claims_at_most_batch_tasks_and_the_rest_fire_next(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    for index in range(5):
        await scheduled(tasks, f"t{index}")
    clock.set(START + MINUTE)
    first = await firing.fire_due_tasks(batch=3)
    second = await firing.fire_due_tasks(batch=3)
    assert (first.tasks, second.tasks) == (3, 2)
    assert len(store.rows("runs")) == 5


# -- misfires --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "fired_minutes", "missed"),
    [
        ({"policy": "skip", "grace_seconds": 30}, [10], 9),
        ({"policy": "run_once", "grace_seconds": 30}, [10], 9),
        # The cap counts late slots; the on-time one fires besides.
        ({"policy": "catch_up", "catch_up_cap": 3, "grace_seconds": 30}, [7, 8, 9, 10], 6),
    ],
)
async def test_misfire_policy_after_an_outage_fires_what_it_keeps_and_records_the_rest(
    tasks: TaskService,
    firing: ScheduleFiring,
    store: InMemoryStore,
    clock: FakeClock,
    policy: dict[str, Any],
    fired_minutes: list[int],
    missed: int,
) -> None:
    task = await scheduled(tasks, misfire=policy)
    clock.set(START + 10 * MINUTE + timedelta(seconds=10))  # slot 12:10 is 10 s old: on time

    report = await firing.fire_due_tasks()

    assert [r.scheduled_for for r in runs_of(store, task.id)] == [
        START + m * MINUTE for m in fired_minutes
    ]
    misfires = skipped(store, task.id, SkipReason.MISFIRE)
    assert len(misfires) == missed
    assert report.skipped == {SkipReason.MISFIRE: missed}
    assert store.row("tasks", task.id).next_run_at == START + 11 * MINUTE


async def test_run_once_fires_the_latest_late_slot_when_none_is_on_time(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(tasks, misfire={"policy": "run_once", "grace_seconds": 30})
    clock.set(START + 10 * MINUTE + timedelta(seconds=45))
    await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [START + 10 * MINUTE]
    assert len(skipped(store, task.id, SkipReason.MISFIRE)) == 9


async def test_a_week_long_outage_is_bounded_and_aggregates_the_oldest_misses(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(
        tasks,
        schedule={"cron": "* * * * *", "timezone": "Europe/Berlin"},
        misfire={"policy": "catch_up", "catch_up_cap": 5, "grace_seconds": 30},
    )
    now = START + timedelta(days=7, seconds=45)
    clock.set(now)

    async with asyncio.timeout(5):
        report = await firing.fire_due_tasks()

    fired = [r.scheduled_for for r in runs_of(store, task.id)]
    assert fired == [START + timedelta(days=7) - m * MINUTE for m in (4, 3, 2, 1, 0)]
    misfires = skipped(store, task.id, SkipReason.MISFIRE)
    aggregated = [d for d in misfires if d.detail.get("aggregated")]
    assert len(aggregated) == 1
    assert aggregated[0].slot == START + MINUTE
    assert len(misfires) <= MAX_MISSED_DECISIONS + 1
    # A floor of the slots not listed one by one, plus the ones recorded individually.
    assert report.skipped[SkipReason.MISFIRE] >= 200
    assert store.row("tasks", task.id).next_run_at == START + timedelta(days=7, minutes=1)


def test_due_slots_lists_everything_for_a_short_gap() -> None:
    schedule = IntervalSchedule(MINUTE)
    listed = due_slots(schedule, START, START + 5 * MINUTE, MisfirePolicy())
    assert listed.slots == [START + m * MINUTE for m in range(6)]
    assert listed.unlisted == 0


def test_due_slots_keeps_the_newest_window_after_a_long_gap() -> None:
    schedule = CronSchedule("* * * * * *")  # every second
    now = START + timedelta(days=2)
    policy = MisfirePolicy(kind=MisfireKind.CATCH_UP, catch_up_cap=10, grace=timedelta(seconds=5))
    listed = due_slots(schedule, START, now, policy)
    assert listed.slots[-1] == now
    assert len(listed.slots) < 256
    late = [s for s in listed.slots if now - s > policy.grace]
    assert len(late) >= 10
    assert listed.unlisted > 0
    assert listed.unlisted_until is not None
    assert listed.unlisted_until < listed.slots[0]


# -- concurrency policies --------------------------------------------------------------------


async def test_forbid_skips_a_slot_while_a_run_is_active(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(tasks, concurrency="forbid")
    clock.set(START + MINUTE)
    await firing.fire_due_tasks()
    clock.set(START + 2 * MINUTE)
    report = await firing.fire_due_tasks()
    assert len(runs_of(store, task.id)) == 1
    [skip] = skipped(store, task.id, SkipReason.FORBID)
    assert skip.slot == START + 2 * MINUTE
    assert report.skipped == {SkipReason.FORBID: 1}


async def test_forbid_fires_again_once_the_active_run_finished(
    tasks: TaskService,
    firing: ScheduleFiring,
    execution: ExecutionService,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks, concurrency="forbid")
    clock.set(START + MINUTE)
    [first] = (await firing.fire_due_tasks()).created
    claimed = await execution.claim(first.id, worker_id=worker.id)
    assert claimed is not None
    await execution.complete(first.id, claimed.token, _success())
    clock.set(START + 2 * MINUTE)
    await firing.fire_due_tasks()
    assert len(runs_of(store, task.id)) == 2


async def test_replace_cancels_the_active_run_and_creates_the_new_one(
    tasks: TaskService,
    firing: ScheduleFiring,
    execution: ExecutionService,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks, concurrency="replace")
    clock.set(START + MINUTE)
    [first] = (await firing.fire_due_tasks()).created
    assert await execution.claim(first.id, worker_id=worker.id) is not None
    clock.set(START + 2 * MINUTE)

    report = await firing.fire_due_tasks()

    old, new = runs_of(store, task.id)
    assert old.status is RunStatus.CANCELLED
    assert old.error == "replaced by slot 2030-03-01T12:02:00Z"
    assert new.status is RunStatus.QUEUED
    assert report.cancelled == 1
    [cancel_event] = [
        e for e in store.rows("events") if e.run_id == old.id and e.to_status is RunStatus.CANCELLED
    ]
    assert (cancel_event.from_status, cancel_event.actor) == (RunStatus.RUNNING, "scheduler")
    fired = [d for d in decisions_of(store, task.id) if d.run_id == new.id]
    assert fired[0].detail["replaced"] == [old.id]


async def test_buffer_one_keeps_one_run_waiting_behind_the_active_one(
    tasks: TaskService,
    firing: ScheduleFiring,
    relay: RunRelay,
    execution: ExecutionService,
    worker: Worker,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks, concurrency="buffer_one")
    clock.set(START + MINUTE)
    [first] = (await firing.fire_due_tasks()).created
    claimed = await execution.claim(first.id, worker_id=worker.id)
    assert claimed is not None
    clock.set(START + 2 * MINUTE)
    await firing.fire_due_tasks()  # one waits behind the running one, pending: not started
    clock.set(START + 3 * MINUTE)
    report = await firing.fire_due_tasks()  # the buffer is full
    assert [r.status for r in runs_of(store, task.id)] == [RunStatus.RUNNING, RunStatus.PENDING]
    [skip] = skipped(store, task.id, SkipReason.BUFFER_FULL)
    assert skip.slot == START + 3 * MINUTE
    assert report.skipped == {SkipReason.BUFFER_FULL: 1}
    assert await relay.relay_pending() == []  # held while the active one runs
    await execution.complete(first.id, claimed.token, _success())
    [released] = await relay.relay_pending()
    assert released.run_id == runs_of(store, task.id)[1].id
    assert runs_of(store, task.id)[1].status is RunStatus.QUEUED


async def test_forbid_applies_between_slots_fired_in_one_tick(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(
        tasks,
        concurrency="forbid",
        misfire={"policy": "catch_up", "catch_up_cap": 3, "grace_seconds": 0},
    )
    clock.set(START + 3 * MINUTE + timedelta(seconds=5))
    await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [START + MINUTE]
    assert len(skipped(store, task.id, SkipReason.FORBID)) == 2


# -- spread ----------------------------------------------------------------------------------


async def test_spread_delays_the_run_deterministically_within_the_window(
    tasks: TaskService,
    firing: ScheduleFiring,
    relay: RunRelay,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks, spread_seconds=600)
    slot = START + MINUTE
    clock.set(slot)
    report = await firing.fire_due_tasks()
    [run] = runs_of(store, task.id)
    offset = spread_offset(task.id, slot, timedelta(seconds=600))
    assert run.not_before == slot + offset
    assert timedelta(0) <= offset < timedelta(seconds=600)
    assert spread_offset(task.id, slot, timedelta(seconds=600)) == offset  # same every time
    assert (run.status, report.published, queue.published) == (RunStatus.PENDING, 0, [])
    clock.set(slot + offset)
    [message] = await relay.relay_pending()
    assert message.run_id == run.id


async def test_spread_offsets_of_many_tasks_cover_the_window(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    for index in range(40):
        await scheduled(tasks, f"t{index}", spread_seconds=60)
    clock.set(START + MINUTE)
    await firing.fire_due_tasks()
    offsets = [r.not_before - r.scheduled_for for r in store.rows("runs")]  # type: ignore[operator]
    assert all(timedelta(0) <= o < MINUTE for o in offsets)
    assert len(set(offsets)) > 30
    assert min(offsets) < timedelta(seconds=15)
    assert max(offsets) > timedelta(seconds=45)


# -- pauses ----------------------------------------------------------------------------------


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture
def observed_tasks(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, observer: RecordingObserver
) -> TaskService:
    return TaskService(
        uow_factory=uow_factory,
        clock=clock,
        observer=observer,
        executor_policy=OPEN_EXECUTOR_POLICY,
    )


async def test_a_paused_task_does_not_fire_and_resumes_from_now(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(tasks)
    await tasks.pause(task.id, principal=ALICE)
    clock.set(START + 10 * MINUTE + timedelta(seconds=30))
    assert (await firing.fire_due_tasks()).tasks == 0
    await tasks.resume(task.id, principal=ALICE)
    assert store.row("tasks", task.id).next_run_at == START + 11 * MINUTE
    clock.set(START + 11 * MINUTE)
    await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [START + 11 * MINUTE]
    assert skipped(store, task.id, SkipReason.MISFIRE) == []


async def test_a_task_paused_after_being_claimed_due_is_not_fired(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(tasks)
    clock.set(START + MINUTE)
    await tasks.pause(task.id, principal=ALICE)
    await firing.fire_due_tasks()
    assert runs_of(store, task.id) == []


async def test_resume_records_each_slot_passed_while_paused_and_counts_them(
    observed_tasks: TaskService,
    firing: ScheduleFiring,
    store: InMemoryStore,
    clock: FakeClock,
    observer: RecordingObserver,
) -> None:
    task = await scheduled(observed_tasks)
    clock.set(START + timedelta(seconds=20))
    await observed_tasks.pause(task.id, principal=ALICE)
    resumed_at = clock.set(START + 4 * MINUTE + timedelta(seconds=30))

    await observed_tasks.resume(task.id, principal=ALICE)

    decisions = skipped(store, task.id, SkipReason.PAUSED)
    assert [d.slot for d in decisions] == [START + n * MINUTE for n in (1, 2, 3, 4)]
    assert all(d.outcome is SlotOutcome.SKIPPED and d.at == resumed_at for d in decisions)
    assert observer.skipped == {"paused": 4}
    # Nothing else explains these slots, and the schedule goes on from now.
    clock.set(START + 5 * MINUTE)
    await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [START + 5 * MINUTE]
    assert [d.reason for d in decisions_of(store, task.id)] == [SkipReason.PAUSED] * 4 + [None]
    preview = await observed_tasks.schedule_preview(task.id, principal=ALICE)
    assert [d.reason for d in preview.recent_decisions].count(SkipReason.PAUSED) == 4


async def test_a_slot_at_the_instant_of_resuming_is_paused_not_fired(
    observed_tasks: TaskService, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(observed_tasks)
    await observed_tasks.pause(task.id, principal=ALICE)
    clock.set(START + 2 * MINUTE)
    resumed = await observed_tasks.resume(task.id, principal=ALICE)
    assert [d.slot for d in skipped(store, task.id, SkipReason.PAUSED)] == [
        START + MINUTE,
        START + 2 * MINUTE,
    ]
    assert resumed.next_run_at == START + 3 * MINUTE


async def test_a_long_pause_records_the_newest_slots_one_by_one_and_the_rest_in_one(
    observed_tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    observer: RecordingObserver,
) -> None:
    task = await scheduled(observed_tasks)
    await observed_tasks.pause(task.id, principal=ALICE)
    clock.set(START + 120 * MINUTE + timedelta(seconds=30))
    await observed_tasks.resume(task.id, principal=ALICE)
    decisions = skipped(store, task.id, SkipReason.PAUSED)
    assert len(decisions) == MAX_MISSED_DECISIONS + 1
    [aggregated] = [d for d in decisions if d.detail.get("aggregated")]
    assert (aggregated.slot, aggregated.detail["count"]) == (START + MINUTE, 70)
    assert aggregated.detail["until"] == "2030-03-01T13:10:00Z"
    assert decisions[-1].slot == START + 120 * MINUTE
    assert observer.skipped == {"paused": 120}


async def test_a_day_long_pause_of_an_every_second_task_is_bounded_and_ends_at_resume(
    observed_tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    observer: RecordingObserver,
) -> None:
    task = await scheduled(observed_tasks, schedule={"interval_seconds": 1})
    await observed_tasks.pause(task.id, principal=ALICE)
    resumed_at = clock.set(START + timedelta(days=1, milliseconds=500))
    await observed_tasks.resume(task.id, principal=ALICE)
    decisions = skipped(store, task.id, SkipReason.PAUSED)
    assert len(decisions) == MAX_MISSED_DECISIONS + 1
    [aggregated, *recent] = decisions
    # The slots passed the most recently are the ones listed one by one; the 86,350 before
    # them were not enumerated (a floor is recorded), so the work stays bounded.
    newest = resumed_at - timedelta(milliseconds=500)
    assert [d.slot for d in recent] == [
        newest - timedelta(seconds=n) for n in range(MAX_MISSED_DECISIONS - 1, -1, -1)
    ]
    assert aggregated.slot == START + timedelta(seconds=1)
    assert aggregated.detail["count_at_least"] >= 256
    assert observer.skipped["paused"] == aggregated.detail["count_at_least"] + len(recent)


async def test_an_edit_while_paused_records_slots_of_the_old_schedule_before_changing_it(
    observed_tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    observer: RecordingObserver,
) -> None:
    task = await scheduled(observed_tasks)
    await observed_tasks.pause(task.id, principal=ALICE)
    clock.set(START + 3 * MINUTE + timedelta(seconds=30))
    await observed_tasks.update(task.id, {"schedule": {"interval_seconds": 120}}, principal=ALICE)
    assert [d.slot for d in skipped(store, task.id, SkipReason.PAUSED)] == [
        START + MINUTE,
        START + 2 * MINUTE,
        START + 3 * MINUTE,
    ]
    clock.set(START + 8 * MINUTE + timedelta(seconds=30))
    await observed_tasks.resume(task.id, principal=ALICE)
    # After the edit only the new schedule's slots: every two minutes.
    assert [d.slot for d in skipped(store, task.id, SkipReason.PAUSED)] == [
        START + n * MINUTE for n in (1, 2, 3, 4, 6, 8)
    ]
    assert observer.skipped == {"paused": 6}


async def test_enabling_a_paused_task_by_an_edit_records_its_paused_slots(
    observed_tasks: TaskService, store: InMemoryStore, clock: FakeClock
) -> None:
    task = await scheduled(observed_tasks)
    await observed_tasks.update(task.id, {"enabled": False}, principal=ALICE)
    clock.set(START + 2 * MINUTE + timedelta(seconds=1))
    enabled = await observed_tasks.update(task.id, {"enabled": True}, principal=ALICE)
    assert enabled.next_run_at == START + 3 * MINUTE
    assert [d.slot for d in skipped(store, task.id, SkipReason.PAUSED)] == [
        START + MINUTE,
        START + 2 * MINUTE,
    ]


async def test_resuming_records_nothing_for_a_running_task_or_one_without_schedule(
    observed_tasks: TaskService,
    store: InMemoryStore,
    clock: FakeClock,
    observer: RecordingObserver,
) -> None:
    running = await scheduled(observed_tasks)
    manual = await observed_tasks.create(task_spec("manual-only"), principal=ALICE)
    await observed_tasks.pause(manual.id, principal=ALICE)
    clock.set(START + 5 * MINUTE)
    await observed_tasks.resume(running.id, principal=ALICE)
    await observed_tasks.resume(manual.id, principal=ALICE)
    assert store.rows("decisions") == []
    assert observer.skipped == {}


async def test_record_paused_slots_leaves_no_trace_when_the_resume_is_rolled_back(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks)
    paused = await tasks.pause(task.id, principal=ALICE)
    resumed_at = clock.set(START + 3 * MINUTE)
    async with uow_factory() as uow:
        count = await record_paused_slots(
            uow, paused, paused_at=paused.updated_at, resumed_at=resumed_at
        )
        assert count == 3
        # no commit: the decisions go with the transaction
    assert store.rows("decisions") == []


# -- DST -------------------------------------------------------------------------------------


async def test_spring_forward_gap_shifts_the_slot_and_the_next_one_is_a_day_later(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    clock.set(datetime(2030, 3, 30, 12, 0, tzinfo=UTC))
    task = await scheduled(tasks, schedule={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    shifted = datetime(2030, 3, 31, 1, 0, tzinfo=UTC)  # 02:30 does not exist: 03:00 CEST
    assert store.row("tasks", task.id).next_run_at == shifted
    clock.set(shifted + timedelta(seconds=1))
    await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [shifted]
    assert store.row("tasks", task.id).next_run_at == datetime(2030, 4, 1, 0, 30, tzinfo=UTC)


async def test_spring_forward_gap_with_skip_policy_fires_nothing_that_day(
    tasks: TaskService, store: InMemoryStore, clock: FakeClock
) -> None:
    clock.set(datetime(2030, 3, 30, 12, 0, tzinfo=UTC))
    schedule = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst_gap": "skip"}
    task = await scheduled(tasks, schedule=schedule)
    assert store.row("tasks", task.id).next_run_at == datetime(2030, 4, 1, 0, 30, tzinfo=UTC)


async def test_fall_back_with_both_fires_the_repeated_wall_time_twice(
    tasks: TaskService, firing: ScheduleFiring, store: InMemoryStore, clock: FakeClock
) -> None:
    clock.set(datetime(2030, 10, 26, 12, 0, tzinfo=UTC))
    schedule = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst_fold": "both"}
    task = await scheduled(tasks, schedule=schedule)
    first = datetime(2030, 10, 27, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2030, 10, 27, 1, 30, tzinfo=UTC)  # 02:30 CET
    for instant in (first, second):
        clock.set(instant + timedelta(seconds=1))
        await firing.fire_due_tasks()
    assert [r.scheduled_for for r in runs_of(store, task.id)] == [first, second]
    assert store.row("tasks", task.id).next_run_at == datetime(2030, 10, 28, 1, 30, tzinfo=UTC)


# -- exactly once ----------------------------------------------------------------------------


async def test_two_dispatchers_firing_at_once_create_each_slot_once(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    store: InMemoryStore,
) -> None:
    for index in range(20):
        await scheduled(tasks, f"t{index}")
    clock.set(START + 3 * MINUTE)
    a = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    b = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    reports = await asyncio.gather(*(f.fire_due_tasks(batch=7) for f in (a, b, a, b, a, b)))
    keys = [(r.task_id, r.scheduled_for) for r in store.rows("runs")]
    assert len(keys) == len(set(keys))
    assert sum(report.tasks for report in reports) == 20


async def test_a_slot_created_elsewhere_is_a_duplicate_and_the_batch_goes_on(
    tasks: TaskService,
    firing: ScheduleFiring,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    taken = await scheduled(tasks, "taken")
    other = await scheduled(tasks, "other")
    slot = START + MINUTE
    store.put(
        "runs",
        TaskRun(
            task_id=taken.id,
            owner_id=taken.owner_id,
            trigger=RunTrigger.MANUAL,
            scheduled_for=slot,
            created_at=START,
        ),
    )
    clock.set(slot)
    report = await firing.fire_due_tasks()
    assert report.duplicates == 1
    assert [r.trigger for r in runs_of(store, taken.id)] == [RunTrigger.MANUAL]
    assert len(runs_of(store, other.id)) == 1
    assert store.row("tasks", taken.id).next_run_at == slot + MINUTE


async def test_a_publish_failure_keeps_the_runs_for_the_relay(
    tasks: TaskService,
    firing: ScheduleFiring,
    relay: RunRelay,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
    clock: FakeClock,
) -> None:
    task = await scheduled(tasks)
    clock.set(START + MINUTE)
    queue.unavailable = True
    report = await firing.fire_due_tasks()
    assert report.fired == 1
    assert report.publish_error is not None
    assert store.row("tasks", task.id).next_run_at == START + 2 * MINUTE
    queue.unavailable = False
    clock.advance(seconds=61)
    [message] = await relay.republish_stale_queued(timedelta(seconds=60))
    assert message.run_id == report.created[0].id


# -- explaining ------------------------------------------------------------------------------


async def test_decisions_appear_in_the_schedule_preview(
    tasks: TaskService, firing: ScheduleFiring, clock: FakeClock
) -> None:
    task = await scheduled(
        tasks, concurrency="forbid", misfire={"policy": "skip", "grace_seconds": 0}
    )
    clock.set(START + 3 * MINUTE)
    await firing.fire_due_tasks()
    clock.set(START + 4 * MINUTE)
    await firing.fire_due_tasks()
    preview = await tasks.schedule_preview(task.id, principal=ALICE, n=2)
    reasons = [(d.outcome, d.reason) for d in preview.recent_decisions]
    assert (SlotOutcome.SKIPPED, SkipReason.FORBID) in reasons
    assert (SlotOutcome.SKIPPED, SkipReason.MISFIRE) in reasons
    assert (SlotOutcome.FIRED, None) in reasons
    assert preview.next_fire_times == [START + 5 * MINUTE, START + 6 * MINUTE]


async def test_task_change_signal_notifies_after_each_commit_of_a_watched_factory(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    signal = TaskChangeSignal()
    woken: list[int] = []
    signal.subscribe(lambda: woken.append(1))
    watched = TaskService(
        uow_factory=signal.watch(uow_factory), clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    task = await watched.create(task_spec("watched"), principal=ALICE)
    await watched.get(task.id, principal=ALICE)  # reads commit nothing: no signal
    await watched.pause(task.id, principal=ALICE)
    assert len(woken) == 2


def _success() -> Any:
    from scheduler_application.ports.executor import ExecutionResult

    return ExecutionResult(status="succeeded")
