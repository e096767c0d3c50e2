"""Named shared limits, circuit breakers and fair queues through the relay, in memory."""

from __future__ import annotations

from collections import Counter

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, task_spec

from pending_runs import PendingRuns
from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict, PermissionDenied
from scheduler_application.execution.service import ExecutionService
from scheduler_application.limits.service import LimitService, parse_limit
from scheduler_application.operations.queue_control import QueueChanges, QueueControl
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_application.testing.coordination import InMemoryRateLimiter
from scheduler_domain.errors import ValidationError
from scheduler_domain.events import EventRecord
from scheduler_domain.queue_settings import Fairness
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task


@pytest.fixture
def limiter() -> InMemoryRateLimiter:
    return InMemoryRateLimiter()


@pytest.fixture
def relay(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    queue: InMemoryRunQueue,
    limiter: InMemoryRateLimiter,
) -> RunRelay:
    return RunRelay(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        rate_limits=RunRateLimits(limiter=limiter),
    )


@pytest.fixture
def limits(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, limiter: InMemoryRateLimiter
) -> LimitService:
    return LimitService(uow_factory=uow_factory, clock=clock, inspector=limiter)


def _events(store: InMemoryStore, run_id: str) -> list[dict[str, object]]:
    return [e.detail for e in store.rows("events") if e.run_id == run_id]


def _circuit_events(store: InMemoryStore) -> list[str]:
    rows = sorted(store.rows("event_log"), key=lambda row: row.seq)
    entries = [row.entry for row in rows if isinstance(row.entry, EventRecord)]
    return [e.kind for e in entries if e.kind.startswith("circuit.")]


def _status(store: InMemoryStore, run_id: str) -> RunStatus:
    status: RunStatus = store.row("runs", run_id).status
    return status


async def test_only_operators_write_limits_and_bad_fields_are_named(limits: LimitService) -> None:
    with pytest.raises(PermissionDenied):
        await limits.put(parse_limit("vendor", {"rate": "10/s"}), principal=ALICE)
    with pytest.raises(ValidationError) as bad:
        parse_limit("vendor", {"rate": "ten"})
    assert bad.value.field == "rate"
    with pytest.raises(ValidationError) as half:
        parse_limit("vendor", {"partition_by": "owner"})
    assert half.value.field == "partition_rate"
    view, created = await limits.put(parse_limit("vendor", {"rate": "10/s"}), principal=OPERATOR)
    assert created
    assert str(view.limit.rate) == "10/s"


async def test_a_task_naming_a_limit_that_does_not_exist_is_refused_naming_the_item(
    tasks: TaskService, limits: LimitService, store: InMemoryStore
) -> None:
    await limits.put(parse_limit("vendor-api", {"rate": "10/s"}), principal=OPERATOR)
    with pytest.raises(ValidationError) as refused:
        await tasks.create(task_spec(limits=["vendor-api", "vendor-ap"]), principal=ALICE)
    assert (refused.value.field, refused.value.message) == (
        "limits[1]",
        "no limit named 'vendor-ap'",
    )
    assert store.rows("tasks") == []
    task = await tasks.create(task_spec(limits=["vendor-api"]), principal=ALICE)
    with pytest.raises(ValidationError) as edit:
        await tasks.update(task.id, {"limits": ["nope", "vendor-api"]}, principal=ALICE)
    assert edit.value.field == "limits[0]"
    assert store.row("tasks", task.id).limits == ("vendor-api",)


async def test_a_queue_or_template_naming_a_missing_limit_is_refused(
    limits: LimitService, uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock
) -> None:
    control = QueueControl(uow_factory=uow_factory, clock=clock)
    with pytest.raises(ValidationError) as queue:
        await control.update("etl", QueueChanges(limits=("db",)), principal=OPERATOR)
    assert (queue.value.field, queue.value.message) == ("limits[0]", "no limit named 'db'")
    templates = TemplateService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    spec = {"name": "ping", "executor": "noop", "policies": {"limits": ["db"]}}
    with pytest.raises(ValidationError) as template:
        await templates.create(spec, principal=OPERATOR)
    assert template.value.field == "policies.limits[0]"
    await limits.put(parse_limit("db", {"max_concurrency": 3}), principal=OPERATOR)
    await control.update("etl", QueueChanges(limits=("db",)), principal=OPERATOR)
    made = await templates.create(spec, principal=OPERATOR)
    subscription = await templates.subscribe(made.id, {}, principal=ALICE)
    assert subscription.limits == ("db",)  # a template's limits are its subscriptions'
    with pytest.raises(ValidationError) as patch:
        await templates.update(made.id, {"policies": {"limits": ["db", "x"]}}, principal=OPERATOR)
    assert patch.value.field == "policies.limits[1]"


async def test_a_limit_still_referenced_is_not_deleted_and_the_answer_names_the_referrers(
    tasks: TaskService,
    limits: LimitService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    store: InMemoryStore,
) -> None:
    await limits.put(parse_limit("vendor", {"rate": "10/s"}), principal=OPERATOR)
    control = QueueControl(uow_factory=uow_factory, clock=clock)
    await control.update("etl", QueueChanges(limits=("vendor",)), principal=OPERATOR)
    task = await tasks.create(task_spec("report", limits=["vendor"]), principal=ALICE)
    templates = TemplateService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    spec = {"name": "ping", "executor": "noop", "policies": {"limits": ["vendor"]}}
    template = await templates.create(spec, principal=OPERATOR)
    with pytest.raises(Conflict) as refused:
        await limits.delete("vendor", principal=OPERATOR)
    assert refused.value.field == "name"
    for referrer in ("1 task(s): report", "queue(s): etl", "template(s): ping"):
        assert referrer in refused.value.message
    assert store.row("shared_limits", "vendor") is not None
    await tasks.delete(task.id, principal=ALICE)
    await control.update("etl", QueueChanges(limits=()), principal=OPERATOR)
    await templates.update(template.id, {"policies": {"limits": None}}, principal=OPERATOR)
    await limits.delete("vendor", principal=OPERATOR)
    assert store.rows("shared_limits") == []


async def test_a_partitioned_limit_holds_each_owner_and_everyone(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    limits: LimitService,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    spec = {"rate": "5/s", "partition_by": "owner", "partition_rate": "2/m"}
    await limits.put(parse_limit("vendor", spec), principal=OPERATOR)
    owners = [ALICE, BOB]
    created = []
    for principal in owners:
        task = await tasks.create(task_spec(limits=["vendor"]), principal=principal)
        created += [await pending.trigger(task.id, principal=principal) for _ in range(5)]
    await relay.relay_pending()
    queued = [r for r in created if _status(store, r.id) is RunStatus.QUEUED]
    assert Counter(r.owner_id for r in queued) == {
        "alice": 2,
        "bob": 2,
    }  # each owner's 2/m, not the global 5
    held = next(r for r in created if _status(store, r.id) is RunStatus.PENDING)
    assert {"reason": "rate_limited"}.items() <= _events(store, held.id)[-1].items()
    assert str(_events(store, held.id)[-1]["bucket"]).startswith("limit:vendor:")
    view = await limits.get("vendor", principal=ALICE)
    assert view.use.in_flight == 4
    assert view.use.in_flight_by_partition == {"alice": 2, "bob": 2}
    assert view.use.tokens == 1.0  # 5 - 4 taken
    clock.advance(seconds=60)  # each owner's bucket refills 2 runs
    await relay.relay_pending()
    assert sum(_status(store, r.id) is RunStatus.QUEUED for r in created) == 8


async def test_a_limits_concurrency_counts_tasks_and_queues_bound_to_it(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    limits: LimitService,
    store: InMemoryStore,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    await limits.put(parse_limit("db", {"max_concurrency": 3}), principal=OPERATOR)
    control = QueueControl(uow_factory=uow_factory, clock=clock)
    await control.update("etl", QueueChanges(limits=("db",)), principal=OPERATOR)
    bound = await tasks.create(task_spec("a", limits=["db"]), principal=ALICE)
    in_queue = await tasks.create(task_spec("b", queue="etl"), principal=BOB)
    free = await tasks.create(task_spec("c"), principal=BOB)
    runs = [
        await pending.trigger(t.id, principal=ALICE) for t in (bound, in_queue) for _ in range(2)
    ]
    other = await pending.trigger(free.id, principal=BOB)
    await relay.relay_pending()
    assert sum(_status(store, r.id) is RunStatus.QUEUED for r in runs) == 3
    assert _status(store, other.id) is RunStatus.QUEUED
    view = await limits.get("db", principal=ALICE)
    assert (view.use.in_flight, view.use.queues) == (3, ["etl"])
    assert relay.stats["held_limit_concurrency"] == 1


async def _fail(execution: ExecutionService, run_id: str, *, ok: bool = False) -> None:
    claim = await execution.claim(run_id, worker_id="w1")
    assert claim is not None
    status = "succeeded" if ok else "failed"
    await execution.complete(run_id, claim.run.version, ExecutionResult(status=status))


async def test_circuit_opens_holds_probes_and_closes_with_events(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    limits: LimitService,
    execution: ExecutionService,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    spec = {"rate": "1000/s", "failure_threshold": 2, "cool_down_seconds": 30}
    await limits.put(parse_limit("vendor", spec), principal=OPERATOR)
    task: Task = await tasks.create(task_spec(limits=["vendor"]), principal=ALICE)
    for _ in range(2):
        run = await pending.trigger(task.id, principal=ALICE)
        await relay.relay_pending()
        await _fail(execution, run.id)
    [circuit] = await limits.circuits(principal=ALICE)
    assert (circuit.circuit.name, circuit.circuit.state.value) == ("limit:vendor", "open")
    held = await pending.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    assert _status(store, held.id) is RunStatus.PENDING  # not failed, no attempt spent
    detail = _events(store, held.id)[-1]
    assert detail["reason"] == "circuit open: limit:vendor"
    assert store.row("runs", held.id).not_before == circuit.reopens_at
    second = await pending.trigger(task.id, principal=ALICE)
    clock.advance(seconds=30)
    await relay.relay_pending()
    states = {r.id: _status(store, r.id) for r in (held, second)}
    assert sorted(states.values()) == [RunStatus.PENDING, RunStatus.QUEUED]  # one probe
    probe = next(run_id for run_id, s in states.items() if s is RunStatus.QUEUED)
    await _fail(execution, probe, ok=True)
    [closed] = await limits.circuits(principal=ALICE)
    assert closed.circuit.state.value == "closed"
    kinds = _circuit_events(store)
    assert kinds == ["circuit.opened", "circuit.half_open", "circuit.closed"]


async def test_a_failing_probe_reopens_the_circuit(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    execution: ExecutionService,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    spec = task_spec(executor="http", params={"url": "https://api.example.com/x"})
    task = await tasks.create(spec, principal=ALICE)
    for _ in range(5):  # the default threshold
        run = await pending.trigger(task.id, principal=ALICE)
        await relay.relay_pending()
        await _fail(execution, run.id)
    clock.advance(seconds=30)
    probe = await pending.trigger(task.id, principal=ALICE)
    await relay.relay_pending()
    await _fail(execution, probe.id)
    blocked = await pending.trigger(task.id, principal=ALICE)
    clock.advance(seconds=29)
    await relay.relay_pending()
    assert _status(store, blocked.id) is RunStatus.PENDING
    assert _events(store, blocked.id)[-1]["reason"] == "circuit open: host:api.example.com"
    kinds = _circuit_events(store)
    assert kinds == ["circuit.opened", "circuit.half_open", "circuit.opened"]


async def test_fair_queue_serves_a_late_owner_before_an_earlier_backlog(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    uow_factory: InMemoryUnitOfWorkFactory,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    control = QueueControl(uow_factory=uow_factory, clock=clock)
    changes = QueueChanges(fairness=Fairness.FAIR, fair_in_flight=5)
    await control.update("default", changes, principal=OPERATOR)
    a = await tasks.create(task_spec("a"), principal=ALICE)
    b = await tasks.create(task_spec("b"), principal=BOB)
    backlog = [await pending.trigger(a.id, principal=ALICE) for _ in range(200)]
    await relay.relay_pending()
    assert sum(_status(store, r.id) is RunStatus.QUEUED for r in backlog) == 5
    late = [await pending.trigger(b.id, principal=BOB) for _ in range(3)]
    await relay.relay_pending()
    assert all(_status(store, r.id) is RunStatus.QUEUED for r in late)  # not behind 195
    assert sum(_status(store, r.id) is RunStatus.QUEUED for r in backlog) == 5


async def test_fifo_queue_serves_the_backlog_first(
    tasks: TaskService,
    pending: PendingRuns,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    a = await tasks.create(task_spec("a"), principal=ALICE)
    b = await tasks.create(task_spec("b"), principal=BOB)
    backlog = [await pending.trigger(a.id, principal=ALICE) for _ in range(30)]
    clock.advance(seconds=1)
    late = [await pending.trigger(b.id, principal=BOB) for _ in range(3)]
    messages = await relay.relay_pending(limit=30)
    assert {m.run_id for m in messages} == {r.id for r in backlog}
    assert all(_status(store, r.id) is RunStatus.PENDING for r in late)
