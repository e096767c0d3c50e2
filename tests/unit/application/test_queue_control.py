"""Queue settings with the in-memory fakes: who may change them, what each change does to runs,
and how the relay applies them (pause, max concurrency, the stored rate limit over the
configured default)."""

from __future__ import annotations

import pytest
from application_fixtures import ALICE, OPERATOR, VIEWER_ALICE, task_spec

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.rate_limiting import RunRateLimits, queue_key
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import PermissionDenied
from scheduler_application.operations.queue_control import QueueChanges, QueueControl
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_application.testing.coordination import InMemoryRateLimiter
from scheduler_domain.errors import ValidationError
from scheduler_domain.queue_settings import QueueSettings
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.status import RunStatus


@pytest.fixture
def control(uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock) -> QueueControl:
    return QueueControl(
        uow_factory=uow_factory,
        clock=clock,
        default_rate_limits={"metered": RateLimit.parse("2/s")},
    )


@pytest.mark.parametrize("principal", [ALICE, VIEWER_ALICE])
async def test_only_operators_and_admins_change_queues(
    control: QueueControl, principal: object, store: InMemoryStore
) -> None:
    for change in (
        control.pause("default", principal=principal),  # type: ignore[arg-type]
        control.resume("default", principal=principal),  # type: ignore[arg-type]
        control.purge("default", principal=principal),  # type: ignore[arg-type]
        control.update("default", QueueChanges(max_concurrency=1), principal=principal),  # type: ignore[arg-type]
    ):
        with pytest.raises(PermissionDenied):
            await change
    assert store.rows("queue_settings") == []


async def test_a_change_records_who_and_when(control: QueueControl, clock: FakeClock) -> None:
    view = await control.update(
        "bulk", QueueChanges(rate_limit=RateLimit.parse("10/s")), principal=OPERATOR
    )
    paused = await control.pause("bulk", principal=OPERATOR)

    assert (view.settings.updated_by, view.settings.updated_at) == ("user:olga", clock.now())
    assert paused.settings.paused
    assert str(paused.settings.rate_limit) == "10/s"  # a pause keeps the limits
    assert (paused.effective_rate_limit, paused.rate_limit_source) == (
        RateLimit.parse("10/s"),
        "queue",
    )


async def test_the_configured_default_applies_until_a_limit_is_stored(
    control: QueueControl,
) -> None:
    before = await control.get("metered", principal=VIEWER_ALICE)
    stored = await control.update(
        "metered", QueueChanges(rate_limit=RateLimit.parse("5/s")), principal=OPERATOR
    )
    cleared = await control.update("metered", QueueChanges(rate_limit=None), principal=OPERATOR)

    assert (str(before.effective_rate_limit), before.rate_limit_source) == ("2/s", "config")
    assert (str(stored.effective_rate_limit), stored.rate_limit_source) == ("5/s", "queue")
    assert (str(cleared.effective_rate_limit), cleared.rate_limit_source) == ("2/s", "config")
    assert "metered" in await control.all(principal=VIEWER_ALICE)


async def test_bad_values_name_their_field(control: QueueControl) -> None:
    with pytest.raises(ValidationError) as info:
        await control.update("bulk", QueueChanges(max_concurrency=0), principal=OPERATOR)
    assert info.value.field == "max_concurrency"
    with pytest.raises(ValidationError) as info:
        await control.pause("no such queue!", principal=OPERATOR)
    assert info.value.field == "name"


async def test_purge_cancels_pending_and_queued_runs_each_with_an_event(
    control: QueueControl,
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    store: InMemoryStore,
) -> None:
    task = await tasks.create(task_spec(queue="junk"), principal=ALICE)
    other = await tasks.create(task_spec("other"), principal=ALICE)
    queued = await pending.trigger(task.id, principal=ALICE, idempotency_key="a")
    await relay.relay_pending()
    waiting = await pending.trigger(task.id, principal=ALICE, idempotency_key="b")
    kept = await pending.trigger(other.id, principal=ALICE)

    assert await control.purge("junk", principal=OPERATOR) == 2

    for run_id in (queued.id, waiting.id):
        assert store.row("runs", run_id).status is RunStatus.CANCELLED
        [event] = [
            e
            for e in store.rows("events")
            if e.run_id == run_id and e.to_status is RunStatus.CANCELLED
        ]
        assert (event.actor, event.detail["reason"]) == ("user:olga", "queue purged")
    assert store.row("runs", kept.id).status is RunStatus.PENDING


async def test_a_paused_queue_backlog_hides_no_other_run(
    control: QueueControl,
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
) -> None:
    held = await tasks.create(task_spec("held", queue="held"), principal=ALICE)
    free = await tasks.create(task_spec("free", queue="free"), principal=ALICE)
    await control.pause("held", principal=OPERATOR)
    for n in range(30):
        await pending.trigger(held.id, principal=ALICE, idempotency_key=f"h{n}")
    later = await pending.trigger(free.id, principal=ALICE)

    published = await relay.relay_pending(limit=10)

    assert [m.run_id for m in published] == [later.id]


async def test_the_relay_puts_back_runs_queued_into_a_paused_queue(
    uow_factory: InMemoryUnitOfWorkFactory,
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    store: InMemoryStore,
) -> None:
    task = await tasks.create(task_spec(queue="late"), principal=ALICE)
    run = await runs.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    # As if the pause committed while another dispatcher was queueing this run.
    async with uow_factory() as uow:
        await uow.queue_settings.save(QueueSettings(name="late", paused=True, updated_by="x"))
        await uow.commit()

    assert await relay.relay_pending() == []

    assert store.row("runs", run.id).status is RunStatus.PENDING
    last = [e for e in store.rows("events") if e.run_id == run.id][-1]
    assert (last.from_status, last.to_status, last.actor) == (
        RunStatus.QUEUED,
        RunStatus.PENDING,
        "relay",
    )


async def test_max_concurrency_holds_the_queue_runs_beyond_it(
    control: QueueControl,
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
) -> None:
    first = await tasks.create(task_spec("a", queue="capped"), principal=ALICE)
    second = await tasks.create(task_spec("b", queue="capped"), principal=ALICE)
    await control.update("capped", QueueChanges(max_concurrency=3), principal=OPERATOR)
    for n in range(3):
        await pending.trigger(first.id, principal=ALICE, idempotency_key=f"a{n}")
        await pending.trigger(second.id, principal=ALICE, idempotency_key=f"b{n}")

    assert len(await relay.relay_pending()) == 3
    assert await relay.relay_pending() == []
    await control.update("capped", QueueChanges(max_concurrency=None), principal=OPERATOR)
    assert len(await relay.relay_pending()) == 3


async def test_the_stored_rate_limit_replaces_the_configured_one(
    uow_factory: InMemoryUnitOfWorkFactory,
    control: QueueControl,
    tasks: TaskService,
    pending: PendingRuns,
    clock: FakeClock,
    queue: InMemoryRunQueue,
) -> None:
    limiter = InMemoryRateLimiter()
    relay = RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        rate_limits=RunRateLimits(
            limiter=limiter, queue_limits={"metered": RateLimit.parse("2/s")}
        ),
    )
    task = await tasks.create(task_spec(queue="metered"), principal=ALICE)
    for n in range(8):
        await pending.trigger(task.id, principal=ALICE, idempotency_key=f"k{n}")
    assert len(await relay.relay_pending()) == 2  # the configured burst

    await control.update(
        "metered", QueueChanges(rate_limit=RateLimit.parse("5/s")), principal=OPERATOR
    )
    clock.advance(seconds=10)
    published = await relay.relay_pending()

    assert len(published) == 5  # the stored limit's burst, from the same bucket
    assert set(limiter.granted) == {queue_key("metered")}
