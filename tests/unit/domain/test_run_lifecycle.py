"""TaskRun: the transition table, fencing tokens, retries and dead-lettering."""

from __future__ import annotations

import copy
import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import IllegalTransition, LeaseLost, StaleFencingToken, ValidationError
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import (
    FINAL_STATUSES,
    TRANSITIONS,
    RunStatus,
    can_transition,
    ensure_transition,
)
from scheduler_domain.task import Task

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)

#: DESIGN §4, written out edge by edge so that a change to the table must change this test too.
LEGAL = {
    ("pending", "queued"),
    ("pending", "cancelled"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "pending"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "timed_out"),
    ("running", "lost"),
    ("running", "cancelled"),
    ("failed", "dead_lettered"),
    ("timed_out", "dead_lettered"),
    ("lost", "dead_lettered"),
}


def _run(**overrides: object) -> TaskRun:
    fields: dict[str, object] = {
        "task_id": "task-1",
        "owner_id": "owner-1",
        "trigger": RunTrigger.MANUAL,
        "scheduled_for": NOW,
        "created_at": NOW,
    }
    fields.update(overrides)
    return TaskRun(**fields)  # type: ignore[arg-type]


def _running() -> tuple[TaskRun, int]:
    run = _run()
    run.mark_queued(now=NOW)
    run.claim(worker_id="w1", now=NOW, lease=LEASE)
    return run, run.version


@given(st.sampled_from(list(RunStatus)), st.sampled_from(list(RunStatus)))
def test_transition_table_allows_exactly_the_designed_edges(
    current: RunStatus, target: RunStatus
) -> None:
    legal = (current.value, target.value) in LEGAL
    assert can_transition(current, target) is legal
    if legal:
        ensure_transition(current, target)
    else:
        with pytest.raises(IllegalTransition) as info:
            ensure_transition(current, target)
        assert info.value.current == current.value
        assert info.value.target == target.value


def test_final_statuses_lead_nowhere_but_dead_letter() -> None:
    for status in FINAL_STATUSES:
        assert TRANSITIONS[status] <= {RunStatus.DEAD_LETTERED}
    assert not TRANSITIONS[RunStatus.DEAD_LETTERED]


@given(st.lists(st.sampled_from(list(RunStatus)), max_size=12))
def test_any_sequence_of_requests_only_ever_follows_legal_edges(
    targets: list[RunStatus],
) -> None:
    run = _run()
    visited = [run.status]
    for target in targets:
        before = run.status
        try:
            run._move(target, now=NOW, actor="test")
        except IllegalTransition:
            assert run.status is before
        else:
            assert (before.value, target.value) in LEGAL
            visited.append(target)
    assert visited[0] is RunStatus.PENDING


def test_claim_hands_out_a_new_fencing_token_and_a_lease() -> None:
    run = _run()
    run.mark_queued(now=NOW)
    before = run.version
    event = run.claim(worker_id="w1", now=NOW, lease=LEASE)
    assert run.version == before + 1
    assert run.status is RunStatus.RUNNING
    assert run.lease_expires_at == NOW + LEASE
    assert (event.from_status, event.to_status) == (RunStatus.QUEUED, RunStatus.RUNNING)
    assert event.actor == "worker:w1"


def test_claim_of_a_pending_run_is_illegal() -> None:
    with pytest.raises(IllegalTransition):
        _run().claim(worker_id="w1", now=NOW, lease=LEASE)


def test_heartbeat_with_current_token_extends_the_lease() -> None:
    run, token = _running()
    later = NOW + timedelta(seconds=10)
    run.heartbeat(token=token, now=later, lease=LEASE)
    assert run.lease_expires_at == later + LEASE
    assert run.version == token


def test_heartbeat_and_outcome_with_stale_token_are_refused() -> None:
    run, token = _running()
    with pytest.raises(StaleFencingToken):
        run.heartbeat(token=token - 1, now=NOW, lease=LEASE)
    with pytest.raises(StaleFencingToken):
        run.finish(RunStatus.SUCCEEDED, token=token - 1, now=NOW)
    assert run.status is RunStatus.RUNNING


def test_outcome_after_loss_is_refused_because_the_token_moved_on() -> None:
    run, token = _running()
    run.lose(now=NOW + LEASE)
    with pytest.raises(StaleFencingToken):
        run.finish(RunStatus.SUCCEEDED, token=token, now=NOW + LEASE)
    assert run.status is RunStatus.LOST


def test_heartbeat_of_a_cancelled_run_reports_the_lease_lost() -> None:
    run, _token = _running()
    run.cancel(now=NOW, actor="user:u1")
    with pytest.raises((LeaseLost, StaleFencingToken)):
        run.heartbeat(token=run.version, now=NOW, lease=LEASE)


def test_finish_records_result_error_and_output() -> None:
    run, token = _running()
    event = run.finish(
        RunStatus.FAILED,
        token=token,
        now=NOW,
        result={"exit_code": 3},
        error="exit code 3",
        output="boom",
    )
    assert run.status is RunStatus.FAILED
    assert run.finished_at == NOW
    assert run.lease_expires_at is None
    assert run.result == {"exit_code": 3}
    assert run.error == "exit code 3"
    assert run.output == "boom"
    assert event.detail["error"] == "exit code 3"


def test_finish_refuses_a_status_that_is_not_an_outcome() -> None:
    run, token = _running()
    with pytest.raises(ValidationError):
        run.finish(RunStatus.LOST, token=token, now=NOW)


def test_failed_attempt_with_attempts_left_yields_a_pending_retry_after_backoff() -> None:
    run, token = _running()
    run.finish(RunStatus.FAILED, token=token, now=NOW, error="x")
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=10))
    retry = run.next_attempt(policy=policy, now=NOW)
    assert retry is not None
    assert retry.status is RunStatus.PENDING
    assert retry.attempt == 2
    assert retry.retry_of == run.id
    assert retry.trigger is RunTrigger.RETRY
    assert retry.scheduled_for == run.scheduled_for
    assert retry.not_before == NOW + timedelta(seconds=10)
    assert retry.idempotency_key == f"retry:{run.id}"


def test_last_attempt_has_no_retry_and_can_be_dead_lettered() -> None:
    run, token = _running()
    run.finish(RunStatus.TIMED_OUT, token=token, now=NOW)
    assert run.next_attempt(policy=RetryPolicy(max_attempts=1), now=NOW) is None
    event = run.dead_letter(now=NOW)
    assert run.status is RunStatus.DEAD_LETTERED
    assert event.detail["final_status"] == "timed_out"


def test_only_failed_attempts_are_retried() -> None:
    run, token = _running()
    run.finish(RunStatus.SUCCEEDED, token=token, now=NOW)
    with pytest.raises(ValidationError):
        run.next_attempt(policy=RetryPolicy(max_attempts=3), now=NOW)


def test_retry_jitter_comes_from_the_given_random_source() -> None:
    run, token = _running()
    run.finish(RunStatus.FAILED, token=token, now=NOW)
    policy = RetryPolicy(
        max_attempts=2, base_delay=timedelta(seconds=1), jitter=timedelta(seconds=5)
    )
    first = run.next_attempt(policy=policy, now=NOW, rng=random.Random(7))
    second = run.next_attempt(policy=policy, now=NOW, rng=random.Random(7))
    assert first is not None
    assert second is not None
    assert first.not_before == second.not_before
    assert NOW + timedelta(seconds=1) <= first.not_before <= NOW + timedelta(seconds=6)


def test_lease_expiry_is_detected_only_for_running_runs() -> None:
    run, _ = _running()
    assert not run.is_lease_expired(NOW)
    assert run.is_lease_expired(NOW + LEASE)
    run.lose(now=NOW + LEASE)
    assert not run.is_lease_expired(NOW + LEASE * 2)


def test_naive_datetimes_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValidationError) as info:
        _run(scheduled_for=datetime(2026, 1, 1))
    assert info.value.field == "scheduled_for"


def test_created_event_records_trigger_and_attempt() -> None:
    run = _run(trigger=RunTrigger.SCHEDULE)
    event = run.created_event(actor="dispatcher")
    assert event.from_status is None
    assert event.to_status is RunStatus.PENDING
    assert event.detail == {"trigger": "schedule", "attempt": 1}


# -- creation ----------------------------------------------------------------------------------


def _task() -> Task:
    return Task(
        owner_id="owner-7",
        name="report",
        executor="noop",
        queue="reports",
        priority=8,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_new_run_belongs_to_its_tasks_owner_queue_and_priority() -> None:
    task = _task()
    run = TaskRun.create(
        task,
        trigger=RunTrigger.SCHEDULE,
        logical_time=NOW - timedelta(minutes=1),
        now=NOW,
        idempotency_key="schedule:x",
        traceparent="00-trace",
    )
    assert (run.task_id, run.owner_id, run.queue, run.priority) == (
        task.id,
        "owner-7",
        "reports",
        8,
    )
    assert (run.status, run.attempt, run.trigger) == (RunStatus.PENDING, 1, RunTrigger.SCHEDULE)
    assert (run.scheduled_for, run.created_at) == (NOW - timedelta(minutes=1), NOW)
    assert (run.idempotency_key, run.traceparent, run.not_before) == (
        "schedule:x",
        "00-trace",
        None,
    )


def test_a_new_attempt_keeps_the_logical_time_and_trace_and_follows_the_task_if_given() -> None:
    first = TaskRun.create(
        _task(), trigger=RunTrigger.MANUAL, logical_time=NOW, now=NOW, traceparent="00-t"
    )
    later = NOW + timedelta(hours=1)
    kept = first.new_attempt(attempt=2, now=later)
    assert (kept.trigger, kept.attempt, kept.retry_of) == (RunTrigger.RETRY, 2, first.id)
    assert (kept.scheduled_for, kept.created_at, kept.traceparent) == (NOW, later, "00-t")
    assert (kept.queue, kept.priority, kept.owner_id) == ("reports", 8, "owner-7")
    moved = _task()
    moved.queue, moved.priority = "urgent", 9
    followed = first.new_attempt(attempt=3, now=later, task=moved)
    assert (followed.queue, followed.priority, followed.attempt) == ("urgent", 9, 3)


def test_a_copy_has_every_field_and_is_its_own_object() -> None:
    """``TaskRun.__copy__`` is written out field by field: a field added to the class and not
    to it fails here."""
    run = TaskRun(
        task_id="t", owner_id="o", trigger=RunTrigger.MANUAL, scheduled_for=NOW, created_at=NOW
    )
    for number, item in enumerate(dataclasses.fields(TaskRun)):
        setattr(run, item.name, object() if item.name != "id" else f"id-{number}")
    copied = copy.copy(run)
    assert copied is not run
    for item in dataclasses.fields(TaskRun):
        assert getattr(copied, item.name) is getattr(run, item.name), item.name
    copied.status = RunStatus.QUEUED
    assert run.status is not RunStatus.QUEUED
