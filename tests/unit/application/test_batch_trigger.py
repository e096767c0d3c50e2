"""Many triggers in one unit of work: answers per item, idempotency (stored, repeated in the
batch), logical times, priorities, gates, and one item's bad input never failing another."""

from __future__ import annotations

from datetime import timedelta

import pytest
from application_fixtures import ALICE, BOB, VIEWER_ALICE, task_spec

from recording_queue import InMemoryInsertingRunQueue, InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import PermissionDenied
from scheduler_application.runs.batch_trigger import BatchTrigger, TriggerItem
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def batch(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, relay: RunRelay
) -> BatchTrigger:
    return BatchTrigger(uow_factory=uow_factory, clock=clock, relay=relay, max_items=50)


async def test_a_batch_creates_queued_runs_in_one_commit_and_publishes_them(
    batch: BatchTrigger,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    task = await tasks.create(task_spec("many"), principal=ALICE)
    commits = store.commits
    outcomes = await batch.trigger(
        [TriggerItem(task_id=task.id) for _ in range(20)], principal=ALICE
    )
    assert store.commits == commits + 1
    assert [o.status for o in outcomes] == ["created"] * 20
    runs = [o.run for o in outcomes if o.run is not None]
    assert len({r.id for r in runs}) == 20
    assert len({r.scheduled_for for r in runs}) == 20  # distinct logical times
    assert max(r.scheduled_for for r in runs) - min(r.scheduled_for for r in runs) == timedelta(
        microseconds=19
    )  # successive microseconds from the batch's instant, chosen before the one insert
    assert {r.status for r in runs} == {RunStatus.QUEUED}
    assert len(queue.published) == 20


async def test_bad_items_are_refused_alone_naming_their_field(
    batch: BatchTrigger, tasks: TaskService, clock: FakeClock
) -> None:
    mine = await tasks.create(task_spec("mine"), principal=ALICE)
    bobs = await tasks.create(task_spec("bobs"), principal=BOB)
    past = clock.now() - timedelta(hours=1)
    outcomes = await batch.trigger(
        [
            TriggerItem(task_id=mine.id),
            TriggerItem(task_id=bobs.id),
            TriggerItem(task_id="no-such-task"),
            TriggerItem(task_id=mine.id, priority=42),
            TriggerItem(task_id=mine.id, idempotency_key=""),
            TriggerItem(task_id=mine.id, logical_time=clock.now() + timedelta(days=1)),
            TriggerItem(task_id=mine.id, logical_time=past),
            TriggerItem(task_id=mine.id, logical_time=past),
            TriggerItem(task_id=mine.id, priority=9),
        ],
        principal=ALICE,
    )
    summary = [(o.status, o.field) for o in outcomes]
    assert summary == [
        ("created", None),
        ("refused", "task_id"),  # another owner's task is not found, as everywhere
        ("refused", "task_id"),
        ("refused", "priority"),
        ("refused", "idempotency_key"),
        ("refused", "logical_time"),
        ("created", None),
        ("refused", "logical_time"),  # that logical time has its run now
        ("created", None),
    ]
    assert outcomes[6].run is not None
    assert outcomes[6].run.scheduled_for == past
    assert outcomes[8].run is not None
    assert outcomes[8].run.priority == 9


async def test_idempotency_keys_replay_stored_runs_and_repeats_within_the_batch(
    batch: BatchTrigger, tasks: TaskService, runs: RunService
) -> None:
    task = await tasks.create(task_spec("keyed"), principal=ALICE)
    before = await runs.trigger(task.id, principal=ALICE, idempotency_key="k-1")
    outcomes = await batch.trigger(
        [
            TriggerItem(task_id=task.id, idempotency_key="k-1"),
            TriggerItem(task_id=task.id, idempotency_key="k-2"),
            TriggerItem(task_id=task.id, idempotency_key="k-2"),
        ],
        principal=ALICE,
    )
    assert [o.status for o in outcomes] == ["replayed", "created", "replayed"]
    assert outcomes[0].run is not None
    assert outcomes[0].run.id == before.id
    assert outcomes[1].run is not None
    assert outcomes[2].run is not None
    assert outcomes[1].run.id == outcomes[2].run.id
    # And the single trigger sees the batch's key.
    again = await runs.trigger(task.id, principal=ALICE, idempotency_key="k-2")
    assert again.id == outcomes[1].run.id


async def test_the_gates_apply_to_a_batch_as_to_single_triggers(
    batch: BatchTrigger, tasks: TaskService
) -> None:
    task = await tasks.create(task_spec("capped", max_concurrent=2), principal=ALICE)
    outcomes = await batch.trigger(
        [TriggerItem(task_id=task.id) for _ in range(5)], principal=ALICE
    )
    statuses = sorted(o.run.status.value for o in outcomes if o.run is not None)
    assert statuses == ["pending", "pending", "pending", "queued", "queued"]


async def test_limits_and_roles(batch: BatchTrigger, tasks: TaskService) -> None:
    task = await tasks.create(task_spec("t"), principal=ALICE)
    with pytest.raises(ValidationError) as too_many:
        await batch.trigger([TriggerItem(task_id=task.id)] * 51, principal=ALICE)
    assert too_many.value.field == "triggers"
    with pytest.raises(ValidationError):
        await batch.trigger([], principal=ALICE)
    with pytest.raises(PermissionDenied):
        await batch.trigger([TriggerItem(task_id=task.id)], principal=VIEWER_ALICE)


async def test_on_a_database_queue_each_run_is_written_with_its_message_once(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, tasks: TaskService
) -> None:
    """A queue that writes new runs' messages with the runs (the postgres queue): the runs
    created get their messages in that write — none for the replayed or refused items — the
    commit stages nothing again, and each message is delivered once, at the commit."""
    database_queue = InMemoryInsertingRunQueue()
    relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=database_queue)
    batch = BatchTrigger(uow_factory=uow_factory, clock=clock, relay=relay, max_items=50)
    task = await tasks.create(task_spec("many"), principal=ALICE)
    [stored] = await batch.trigger(
        [TriggerItem(task_id=task.id, idempotency_key="k1")], principal=ALICE
    )
    database_queue.inserted_with.clear()
    database_queue.published.clear()

    outcomes = await batch.trigger(
        [
            TriggerItem(task_id=task.id),
            TriggerItem(task_id=task.id, idempotency_key="k1"),
            TriggerItem(task_id=task.id, idempotency_key="k2"),
            TriggerItem(task_id="no-such-task"),
            TriggerItem(task_id=task.id, idempotency_key="k2"),
            TriggerItem(task_id=task.id, priority=99),
            TriggerItem(task_id=task.id),
        ],
        principal=ALICE,
    )

    assert [o.status for o in outcomes] == [
        "created",
        "replayed",
        "created",
        "refused",
        "replayed",
        "refused",
        "created",
    ]
    assert stored.run is not None
    assert outcomes[1].run == stored.run
    created = [o.run.id for o in outcomes if o.status == "created" and o.run is not None]
    # The clock stands still: the first item's logical time is the stored run's, so that run
    # is not inserted by the first write and is written (with its message) by a second one.
    assert len(database_queue.inserted_with) == 2
    written = [m.run_id for batch in database_queue.inserted_with for m in batch]
    assert sorted(written) == sorted(created)
    assert database_queue.staged == []  # nothing left to stage at the commit
    assert sorted(m.run_id for m in database_queue.published) == sorted(created)
