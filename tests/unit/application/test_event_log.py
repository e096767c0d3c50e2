"""The event log's application side: every task change and every skipped slot is an event in
the transaction of the change; reading applies the object-level rule; pruning keeps the
newest entry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, START, task_spec

from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import NotFound
from scheduler_application.events.log import EventService
from scheduler_application.events.stream import Heartbeat, LogWatcher, follow
from scheduler_application.runs.scheduling import ScheduleFiring
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import FakeClock, InMemoryStore, InMemoryUnitOfWorkFactory
from scheduler_domain.errors import ValidationError
from scheduler_domain.events import LOG_START
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def events(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> EventService:
    return EventService(uow_factory=uow_factory, clock=clock)


async def kinds(events: EventService, principal=ALICE, **query) -> list[str]:  # type: ignore[no-untyped-def]
    return [e.kind for e in await events.read(principal=principal, after=LOG_START, **query)]


async def test_every_task_change_is_an_event_with_its_owner(
    tasks: TaskService, events: EventService, clock: FakeClock
) -> None:
    task = await tasks.create(task_spec(schedule={"interval_seconds": 60}), principal=ALICE)
    await tasks.update(task.id, {"description": "now with words"}, principal=ALICE)
    await tasks.pause(task.id, principal=ALICE)
    clock.advance(timedelta(minutes=3))
    await tasks.resume(task.id, principal=ALICE)
    await tasks.update(task.id, {"enabled": False}, principal=ALICE)
    await tasks.delete(task.id, principal=ALICE)

    logged = await events.read(principal=ALICE, after=LOG_START)
    assert [e.kind for e in logged] == [
        "task.created",
        "task.updated",
        "task.paused",
        # The slots passed while paused, each with its reason, in the resume's transaction.
        "task.slot_skipped",
        "task.slot_skipped",
        "task.slot_skipped",
        "task.resumed",
        "task.paused",
        "task.deleted",
    ]
    assert logged[1].detail["changed"] == ["description"]
    assert logged[3].detail["reason"] == "paused"
    assert {e.actor for e in logged if e.kind != "task.slot_skipped"} == {"user:alice"}
    assert await kinds(events, BOB) == []
    assert len(await kinds(events, OPERATOR)) == len(logged)


async def test_a_misfire_is_a_skipped_slot_event(
    tasks: TaskService,
    events: EventService,
    clock: FakeClock,
    uow_factory: InMemoryUnitOfWorkFactory,
    relay: RunRelay,
) -> None:
    task = await tasks.create(
        task_spec(
            schedule={"interval_seconds": 60}, misfire={"policy": "skip", "grace_seconds": 30}
        ),
        principal=ALICE,
    )
    clock.set(START + timedelta(minutes=5, seconds=10))
    await ScheduleFiring(uow_factory=uow_factory, clock=clock, relay=relay).fire_due_tasks()
    skipped = [
        e
        for e in await events.read(principal=ALICE, after=LOG_START, task_id=task.id)
        if e.kind == "task.slot_skipped"
    ]
    assert len(skipped) == 4
    assert {e.detail["reason"] for e in skipped} == {"misfire"}
    assert await kinds(events, task_id=task.id, statuses=(RunStatus.PENDING,)) == ["run.pending"]


async def test_someone_elses_task_or_run_is_not_found(
    tasks: TaskService, runs: RunService, events: EventService
) -> None:
    task = await tasks.create(task_spec(), principal=ALICE)
    run = await runs.trigger(task.id, principal=ALICE)
    for query in ({"task_id": task.id}, {"run_id": run.id}):
        with pytest.raises(NotFound):
            await events.read(principal=BOB, after=LOG_START, **query)  # type: ignore[arg-type]
        assert await kinds(events, OPERATOR, **query)
    with pytest.raises(ValidationError) as bad:
        await events.read(principal=ALICE, after=LOG_START, kinds=["Not A Kind"])
    assert bad.value.field == "kind"


async def test_record_appends_a_non_task_event_only_privileged_roles_see(
    events: EventService,
) -> None:
    await events.record("queue.paused", actor="user:olga", subject="queue:default")
    [seen] = await events.read(principal=OPERATOR, after=LOG_START)
    assert (seen.kind, seen.subject, seen.task_id) == ("queue.paused", "queue:default", None)
    assert await kinds(events, ALICE) == []
    with pytest.raises(ValidationError):
        await events.record("Queue Paused!", actor="x")


async def test_prune_deletes_old_entries_in_batches_but_keeps_the_newest(
    tasks: TaskService, events: EventService, clock: FakeClock, store: InMemoryStore
) -> None:
    for n in range(5):
        await tasks.create(task_spec(f"t{n}"), principal=ALICE)
    clock.advance(timedelta(days=40))
    assert await events.prune(older_than=timedelta(days=30), batch=2) == 4
    assert await kinds(events) == ["task.created"]
    assert await events.prune(older_than=timedelta(days=30), batch=2) == 0


async def test_a_follower_gets_heartbeats_while_only_others_events_come(
    tasks: TaskService, events: EventService, uow_factory: InMemoryUnitOfWorkFactory
) -> None:
    """Other users' events wake the follower all the time; its own stream is still quiet, so
    it must still send heartbeats."""
    watcher = LogWatcher(uow_factory=uow_factory, poll_seconds=0.01)
    stream = follow(events, watcher, principal=ALICE, after=LOG_START, heartbeat_seconds=0.2)
    busy = True

    async def bob_keeps_busy() -> None:
        n = 0
        while busy:
            await tasks.create(task_spec(f"b{n}"), principal=BOB)
            n += 1
            await asyncio.sleep(0.02)

    writer = asyncio.create_task(bob_keeps_busy())
    try:
        got = [await asyncio.wait_for(anext(stream), 2) for _ in range(3)]
    finally:
        busy = False
        await writer
        await stream.aclose()
        await watcher.aclose()
    assert all(isinstance(item, Heartbeat) for item in got)
    assert watcher.generation > 3
