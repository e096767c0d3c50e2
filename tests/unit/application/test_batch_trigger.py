"""Many triggers in one unit of work: answers per item, idempotency (stored, repeated in the
batch), logical times, priorities, gates, and one item's bad input never failing another."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, BOB, VIEWER_ALICE, task_spec

from recording_queue import InMemoryInsertingRunQueue, InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import PermissionDenied, Unavailable
from scheduler_application.ports.unit_of_work import NeedsTransaction
from scheduler_application.runs.batch_trigger import BatchTrigger, TriggerItem
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWork,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.run import TaskRun
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


class _StatementUnits:
    """Statement units of work over the in-memory store, as autocommit makes them on
    PostgreSQL: an insert of runs is committed as it is made, a row lock is refused
    (``NeedsTransaction``) before it is taken, and the insert after ``inserts_before_outage``
    of them fails as a database outage would."""

    def __init__(self, store: InMemoryStore, *, inserts_before_outage: int | None = None) -> None:
        self.store = store
        self.inserts_before_outage = inserts_before_outage
        self.inserts = 0
        self.opened = 0

    def __call__(self) -> InMemoryUnitOfWork:
        self.opened += 1
        uow = InMemoryUnitOfWork(self.store)
        insert = uow.runs.add_new_many

        async def add_new_many(runs: Any, *, events: Any = ()) -> set[str]:
            if (
                self.inserts_before_outage is not None
                and self.inserts >= self.inserts_before_outage
            ):
                raise Unavailable("the database went away", dependency="database")
            self.inserts += 1
            inserted = await insert(runs, events=events)
            await uow.commit()  # autocommit: durable at once
            return inserted

        async def lock_many(task_ids: Any) -> set[str]:
            raise NeedsTransaction("needs a transaction: a row lock")

        uow.runs.add_new_many = add_new_many  # type: ignore[method-assign]
        uow.tasks.lock_many = lock_many  # type: ignore[method-assign]
        return uow


def _runs_stored(store: InMemoryStore, task_id: str) -> list[TaskRun]:
    return [run for run in store.rows("runs") if run.task_id == task_id]


async def test_a_gate_that_locks_rows_sends_the_triggers_to_a_transaction(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    tasks: TaskService,
    store: InMemoryStore,
) -> None:
    """A capped task's runs are counted under a row lock, which a statement unit refuses
    before taking it (nothing written yet): the group is written again, in a transaction,
    once — the statement unit inserted nothing."""
    units = _StatementUnits(store)
    batch = BatchTrigger(
        uow_factory=uow_factory, clock=clock, relay=relay, statement_uow_factory=units
    )
    capped = await tasks.create(task_spec("capped", max_concurrent=5), principal=ALICE)
    commits = store.commits

    outcomes = await batch.trigger([TriggerItem(task_id=capped.id)] * 3, principal=ALICE)

    assert [o.status for o in outcomes] == ["created"] * 3
    assert (units.opened, units.inserts) == (1, 0)
    assert store.commits == commits + 1  # the transaction's
    assert len(_runs_stored(store, capped.id)) == 3


async def test_a_plain_task_is_triggered_in_the_statement_unit(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    tasks: TaskService,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    units = _StatementUnits(store)
    batch = BatchTrigger(
        uow_factory=uow_factory, clock=clock, relay=relay, statement_uow_factory=units
    )
    plain = await tasks.create(task_spec("plain"), principal=ALICE)
    opened = len(uow_factory.created)

    outcomes = await batch.trigger([TriggerItem(task_id=plain.id)] * 3, principal=ALICE)

    assert [o.status for o in outcomes] == ["created"] * 3
    assert (units.opened, units.inserts) == (1, 1)
    assert len(uow_factory.created) == opened  # no transactional unit of work
    assert len(_runs_stored(store, plain.id)) == 3
    assert len(queue.published) == 3


async def test_runs_written_before_an_outage_are_answered_created_and_the_rest_fail_alone(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    tasks: TaskService,
    store: InMemoryStore,
) -> None:
    """In a statement unit an insert is durable at once: when a later insert (a run moved to
    a free logical time) fails, the runs already written are their items' answers and only
    the unwritten item gets the error — failing the group would have its callers (and the
    trigger group's retry item by item) make the written keyless runs again."""
    task = await tasks.create(task_spec("moved"), principal=ALICE)
    plain = BatchTrigger(uow_factory=uow_factory, clock=clock, relay=relay)
    [stored] = await plain.trigger([TriggerItem(task_id=task.id)], principal=ALICE)
    units = _StatementUnits(store, inserts_before_outage=1)
    batch = BatchTrigger(
        uow_factory=uow_factory, clock=clock, relay=relay, statement_uow_factory=units
    )

    # The clock stands still: the first item's logical time is the stored run's, so its run
    # waits for a second insert, which fails; the second item's run is in the first.
    outcomes = await batch.trigger(
        [TriggerItem(task_id=task.id), TriggerItem(task_id=task.id)], principal=ALICE
    )

    assert [o.status for o in outcomes] == ["refused", "created"]
    assert outcomes[0].code == "unavailable"
    assert outcomes[1].run is not None
    assert {run.id for run in _runs_stored(store, task.id)} == {
        stored.run.id if stored.run is not None else "",
        outcomes[1].run.id,
    }


async def test_an_outage_before_any_run_is_written_fails_the_whole_group(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    tasks: TaskService,
    store: InMemoryStore,
) -> None:
    task = await tasks.create(task_spec("down"), principal=ALICE)
    units = _StatementUnits(store, inserts_before_outage=0)
    batch = BatchTrigger(
        uow_factory=uow_factory, clock=clock, relay=relay, statement_uow_factory=units
    )

    with pytest.raises(Unavailable):
        await batch.trigger([TriggerItem(task_id=task.id)] * 2, principal=ALICE)

    assert _runs_stored(store, task.id) == []
