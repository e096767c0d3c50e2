"""A tick writes its batch at once, and the runs it fires pass the relay's gates in the same
transaction: queued (and staged, on a queue kept in the database) in the commit that creates
them, pending when a spread or a gate holds them, pending as well when a gate fails."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue, InMemoryTransactionalRunQueue
from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryRateLimiter,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.events import SlotOutcome
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(10)

MINUTE = timedelta(minutes=1)


def statuses(store: InMemoryStore, run_id: str) -> list[RunStatus]:
    return [e.to_status for e in store.rows("events") if e.run_id == run_id]


async def every_minute(tasks: TaskService, count: int, **spec: Any) -> list[str]:
    created = []
    for i in range(count):
        task = await tasks.create(
            task_spec(f"tick-{i}", schedule={"interval_seconds": 60}, **spec), principal=ALICE
        )
        created.append(task.id)
    return created


async def test_a_batch_is_fired_queued_and_staged_in_one_commit(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    queue = InMemoryTransactionalRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    task_ids = await every_minute(tasks, 5)
    clock.set(START + MINUTE)
    commits = uow_factory.commits

    report = await firing.fire_due_tasks(batch=10)

    assert uow_factory.commits == commits + 1
    assert report.fired == report.published == 5
    assert report.lateness == [timedelta(0)] * 5
    [staged] = queue.staged
    assert {m.run_id for m in staged} == {run.id for run in report.created}
    assert queue.published == staged  # by the commit: nothing is published after it
    for run in report.created:
        stored = store.row("runs", run.id)
        assert (stored.status, stored.queued_at) == (RunStatus.QUEUED, START + MINUTE)
        assert statuses(store, run.id) == [RunStatus.PENDING, RunStatus.QUEUED]
    fired = [d for d in store.rows("decisions") if d.outcome is SlotOutcome.FIRED]
    assert sorted(d.task_id for d in fired) == sorted(task_ids)
    for task_id in task_ids:
        assert store.row("tasks", task_id).next_run_at == START + 2 * MINUTE


async def test_on_a_broker_the_batch_is_published_right_after_the_commit(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    queue: InMemoryRunQueue,
) -> None:
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    await every_minute(tasks, 3)
    clock.set(START + MINUTE)

    report = await firing.fire_due_tasks()

    assert sorted(m.run_id for m in queue.published) == sorted(r.id for r in report.created)
    assert report.published == 3
    assert report.publish_error is None


async def test_a_spread_run_is_written_pending_and_the_relay_takes_it_when_due(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
    relay: RunRelay,
    queue: InMemoryRunQueue,
) -> None:
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    await every_minute(tasks, 1, spread_seconds=30)
    clock.set(START + MINUTE)

    [run] = (await firing.fire_due_tasks()).created

    assert run.not_before is not None
    assert run.not_before > START + MINUTE
    assert store.row("runs", run.id).status is RunStatus.PENDING
    assert queue.published == []
    clock.set(run.not_before)
    [message] = await relay.relay_pending()
    assert message.run_id == run.id


async def test_runs_beyond_the_rate_limit_are_written_pending_with_a_later_not_before(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    queue = InMemoryRunQueue()
    relay = RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        rate_limits=RunRateLimits(limiter=InMemoryRateLimiter()),
    )
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay)
    await every_minute(
        tasks, 1, rate_limit="1/m", misfire={"policy": "catch_up", "grace_seconds": 3600}
    )
    clock.set(START + 3 * MINUTE)

    first, second, third = (await firing.fire_due_tasks()).created

    assert [m.run_id for m in queue.published] == [first.id]
    assert store.row("runs", first.id).status is RunStatus.QUEUED
    for held in (second, third):
        stored = store.row("runs", held.id)
        assert stored.status is RunStatus.PENDING
        assert stored.not_before is not None
        assert stored.not_before > START + 3 * MINUTE
        assert statuses(store, held.id) == [RunStatus.PENDING, RunStatus.PENDING]
    assert store.row("runs", third.id).not_before > store.row("runs", second.id).not_before


class _BrokenLimiter:
    async def acquire(self, key: str, limit: RateLimit, *, now: datetime) -> timedelta:
        raise RuntimeError("limiter exploded")


async def test_a_gate_that_fails_leaves_the_fired_runs_pending_for_the_relay_loop(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    queue = InMemoryRunQueue()
    broken = RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        rate_limits=RunRateLimits(limiter=_BrokenLimiter()),
    )
    firing = ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=broken)
    [task_id] = await every_minute(tasks, 1, rate_limit="10/s")
    clock.set(START + MINUTE)

    report = await firing.fire_due_tasks()

    assert report.fired == 1
    assert report.publish_error is not None
    assert "limiter exploded" in report.publish_error
    [run] = report.created
    stored = store.row("runs", run.id)
    assert (stored.status, stored.queued_at) == (RunStatus.PENDING, None)
    assert statuses(store, run.id) == [RunStatus.PENDING]
    assert queue.published == []
    assert store.row("tasks", task_id).next_run_at == START + 2 * MINUTE
    healthy = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
    [message] = await healthy.relay_pending()
    assert message.run_id == run.id
