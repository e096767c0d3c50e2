"""Operations in bulk: selections by ids or filter, outcomes per item, progress, bounds, the
frozen filter, owner scope, and a job taken over after its process died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, BOB, OPERATOR, VIEWER_ALICE, task_spec

from pending_runs import PendingRuns
from scheduler_application.errors import PermissionDenied
from scheduler_application.operations.bulk import BulkRunner, BulkService
from scheduler_application.operations.bulk_operations import BulkAction, BulkStatus, Selection
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import (
    OPEN_EXECUTOR_POLICY,
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.status import RunStatus

pytestmark = pytest.mark.timeout(30)

#: A template whose runs' params show the parameter they were rendered from.
NAP: dict[str, Any] = {
    "name": "nap",
    "executor": "noop",
    "params": {"sleep_seconds": "{{n}}"},
    "params_schema": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
        "required": ["n"],
    },
}


@pytest.fixture
async def runner(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, runs: RunService, tasks: TaskService
) -> AsyncIterator[BulkRunner]:
    runner = BulkRunner(uow_factory=uow_factory, clock=clock, runs=runs, tasks=tasks, batch=50)
    yield runner
    await runner.aclose()


@pytest.fixture
def bulk(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, runner: BulkRunner
) -> BulkService:
    return BulkService(uow_factory=uow_factory, clock=clock, runner=runner, max_items=500)


async def _runs(runs: PendingRuns, tasks: TaskService, n: int, *, name: str = "t") -> list[str]:
    """``n`` pending runs of a new task (as the relay loop would find them)."""
    task = await tasks.create(task_spec(name), principal=ALICE)
    return [(await runs.trigger(task.id, principal=ALICE)).id for _ in range(n)]


async def _finish(bulk: BulkService, operation_id: str) -> object:
    operation = await bulk.wait(operation_id, principal=ALICE, timeout=10)
    assert operation.finished, operation
    return operation


async def test_cancel_by_ids_answers_per_item(
    bulk: BulkService,
    runs: RunService,
    pending: PendingRuns,
    tasks: TaskService,
    store: InMemoryStore,
) -> None:
    pending, done = await _runs(pending, tasks, 2)
    await runs.cancel(done, principal=ALICE)
    operation = await bulk.start(
        BulkAction.CANCEL_RUNS, Selection(ids=(pending, done, "no-such-run")), principal=ALICE
    )
    finished = await bulk.wait(operation.id, principal=ALICE, timeout=10)
    assert finished.status is BulkStatus.SUCCEEDED
    assert [(r["id"], r["outcome"]) for r in finished.results] == [
        (pending, "succeeded"),
        (done, "skipped"),
        ("no-such-run", "failed"),
    ]
    assert (finished.done, finished.succeeded, finished.skipped, finished.failed) == (3, 1, 1, 1)
    assert (await runs.get(pending, principal=ALICE)).status is RunStatus.CANCELLED
    events = await runs.events(pending, principal=ALICE)
    assert events[-1].to_status is RunStatus.CANCELLED


async def test_cancel_by_filter_in_batches_with_a_dry_run_count_and_a_frozen_selection(
    bulk: BulkService, runs: RunService, pending: PendingRuns, tasks: TaskService, clock: FakeClock
) -> None:
    ids = await _runs(pending, tasks, 120)
    selection = Selection(filter={"status": ["pending"]})
    assert await bulk.count(BulkAction.CANCEL_RUNS, selection, principal=ALICE) == 120

    operation = await bulk.start(BulkAction.CANCEL_RUNS, selection, principal=ALICE)
    assert operation.total == 120
    # A run created after the start is not part of the selection.
    clock.advance(timedelta(seconds=1))
    (later,) = await _runs(pending, tasks, 1, name="later")
    finished = await bulk.wait(operation.id, principal=ALICE, timeout=10)
    assert (finished.status, finished.done, finished.succeeded) == (BulkStatus.SUCCEEDED, 120, 120)
    assert finished.results == []  # a filter keeps only failures
    for run_id in ids:
        assert (await runs.get(run_id, principal=ALICE)).status is RunStatus.CANCELLED
    assert (await runs.get(later, principal=ALICE)).status is RunStatus.PENDING


async def test_retry_by_filter_and_again_skips_runs_already_retried(
    bulk: BulkService, runs: RunService, pending: PendingRuns, tasks: TaskService
) -> None:
    ids = await _runs(pending, tasks, 3)
    for run_id in ids:
        await runs.cancel(run_id, principal=ALICE)
    selection = Selection(filter={"status": ["cancelled"]})
    first = await bulk.start(BulkAction.RETRY_RUNS, selection, principal=ALICE)
    done = await bulk.wait(first.id, principal=ALICE, timeout=10)
    assert (done.succeeded, done.skipped) == (3, 0)
    second = await bulk.start(BulkAction.RETRY_RUNS, selection, principal=ALICE)
    again = await bulk.wait(second.id, principal=ALICE, timeout=10)
    assert (again.succeeded, again.skipped) == (0, 3)
    page = await runs.list(principal=ALICE, statuses=[RunStatus.QUEUED])  # queued at once
    assert len(page.items) == 3


async def test_pause_and_delete_tasks_by_filter(bulk: BulkService, tasks: TaskService) -> None:
    for name in ("etl-a", "etl-b", "web"):
        await tasks.create(task_spec(name), principal=ALICE)
    paused = await bulk.start(
        BulkAction.PAUSE_TASKS, Selection(filter={"name_prefix": "etl-"}), principal=ALICE
    )
    assert (await bulk.wait(paused.id, principal=ALICE, timeout=10)).succeeded == 2
    states = {t.name: t.paused for t in (await tasks.list(principal=ALICE)).items}
    assert states == {"etl-a": True, "etl-b": True, "web": False}
    deleted = await bulk.start(
        BulkAction.DELETE_TASKS, Selection(filter={"enabled": False}), principal=ALICE
    )
    assert (await bulk.wait(deleted.id, principal=ALICE, timeout=10)).succeeded == 2
    assert [t.name for t in (await tasks.list(principal=ALICE)).items] == ["web"]


async def test_a_selection_reaches_only_the_callers_own_objects(
    bulk: BulkService, runs: RunService, pending: PendingRuns, tasks: TaskService
) -> None:
    alices = await _runs(pending, tasks, 2)
    bob_task = await tasks.create(task_spec("bobs"), principal=BOB)
    bobs = (await pending.trigger(bob_task.id, principal=BOB)).id
    selection = Selection(filter={"status": ["pending"]})
    assert await bulk.count(BulkAction.CANCEL_RUNS, selection, principal=ALICE) == 2
    operation = await bulk.start(
        BulkAction.CANCEL_RUNS, Selection(ids=(*alices, bobs)), principal=ALICE
    )
    finished = await bulk.wait(operation.id, principal=ALICE, timeout=10)
    assert [r["outcome"] for r in finished.results] == ["succeeded", "succeeded", "failed"]
    assert (await runs.get(bobs, principal=BOB)).status is RunStatus.PENDING
    # And Bob cannot look at Alice's operation.
    with pytest.raises(Exception, match="not found"):
        await bulk.get(operation.id, principal=BOB)


@pytest.mark.parametrize(
    ("action", "selection", "field"),
    [
        (BulkAction.CANCEL_RUNS, Selection(filter={"colour": "red"}), "filter.colour"),
        (BulkAction.CANCEL_RUNS, Selection(filter={"status": ["sleeping"]}), "filter.status"),
        (BulkAction.CANCEL_RUNS, Selection(filter={"created_after": "yesterday"}), "filter"),
        (BulkAction.PAUSE_TASKS, Selection(filter={"status": ["queued"]}), "filter.status"),
        (BulkAction.CANCEL_RUNS, Selection(ids=()), "ids"),
        (BulkAction.CANCEL_RUNS, Selection(ids=("a", "a")), "ids"),
        (BulkAction.CANCEL_RUNS, Selection(ids=tuple(str(i) for i in range(1001))), "ids"),
    ],
)
async def test_bad_selections_are_refused_naming_the_field(
    bulk: BulkService, action: BulkAction, selection: Selection, field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await bulk.start(action, selection, principal=ALICE)
    assert refused.value.field is not None
    assert refused.value.field.startswith(field)


async def test_a_filter_matching_more_than_the_bound_is_refused_with_its_count(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    runner: BulkRunner,
    runs: RunService,
    pending: PendingRuns,
    tasks: TaskService,
) -> None:
    bulk = BulkService(uow_factory=uow_factory, clock=clock, runner=runner, max_items=20)
    await _runs(pending, tasks, 21)
    with pytest.raises(ValidationError, match="21 objects") as refused:
        await bulk.start(
            BulkAction.CANCEL_RUNS, Selection(filter={"status": ["pending"]}), principal=ALICE
        )
    assert refused.value.field == "filter"


async def test_a_viewer_may_not_start_one(bulk: BulkService) -> None:
    with pytest.raises(PermissionDenied):
        await bulk.start(BulkAction.CANCEL_RUNS, Selection(ids=("x",)), principal=VIEWER_ALICE)


async def test_a_job_whose_process_died_is_taken_over_from_its_last_position(
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    runs: RunService,
    pending: PendingRuns,
    tasks: TaskService,
) -> None:
    ids = await _runs(pending, tasks, 30)
    for run_id in ids:
        await runs.cancel(run_id, principal=ALICE)
    gate = asyncio.Event()
    calls = 0
    original = runs.retry

    async def slow_retry(run_id: str, *, principal: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 15:
            await gate.wait()  # the first process "dies" here, mid-batch
        return await original(run_id, principal=principal)  # type: ignore[arg-type]

    runs.retry = slow_retry  # type: ignore[method-assign]
    first = BulkRunner(uow_factory=uow_factory, clock=clock, runs=runs, tasks=tasks, batch=10)
    service = BulkService(uow_factory=uow_factory, clock=clock, runner=first)
    operation = await service.start(
        BulkAction.RETRY_RUNS, Selection(filter={"status": ["cancelled"]}), principal=ALICE
    )
    while calls < 15:
        await asyncio.sleep(0)
    await first.aclose()  # the process is gone; one batch (10) was recorded
    stored = await service.get(operation.id, principal=ALICE)
    assert (stored.status, stored.done) == (BulkStatus.RUNNING, 10)

    second = BulkRunner(uow_factory=uow_factory, clock=clock, runs=runs, tasks=tasks, batch=10)
    assert await second.resume_orphans() == 0  # its heartbeat is fresh
    clock.advance(timedelta(seconds=31))
    assert await second.resume_orphans() == 1
    gate.set()
    await second.wait(operation.id, timeout=10)
    finished = await BulkService(uow_factory=uow_factory, clock=clock, runner=second).get(
        operation.id, principal=ALICE
    )
    assert finished.status is BulkStatus.SUCCEEDED
    # Every run retried exactly once: the items redone after the take-over were skipped.
    assert finished.done == 30
    retried = await runs.list(principal=ALICE, statuses=[RunStatus.QUEUED], limit=100)
    assert len(retried.items) == 30
    await second.aclose()


async def test_a_batch_that_meets_a_concurrent_change_is_cancelled_run_by_run(
    runs: RunService, pending: PendingRuns, tasks: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scheduler_application.errors import Conflict
    from scheduler_application.testing.repositories import InMemoryRunRepository

    ids = await _runs(pending, tasks, 3)
    original = InMemoryRunRepository.update_many
    raised = 0

    async def conflicting(self: InMemoryRunRepository, writes: object, **kwargs: object) -> None:
        nonlocal raised
        if len(writes) > 1:  # type: ignore[arg-type]
            raised += 1
            raise Conflict("a run moved on", field="version")
        await original(self, writes, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(InMemoryRunRepository, "update_many", conflicting)
    outcomes = await runs.cancel_many([*ids, "gone"], principal=ALICE)
    assert raised == 1
    assert outcomes == {**dict.fromkeys(ids, "cancelled"), "gone": "not_found"}
    for run_id in ids:
        assert (await runs.get(run_id, principal=ALICE)).status is RunStatus.CANCELLED


async def test_retrigger_and_retry_carry_the_original_runs_parameters(
    bulk: BulkService,
    runs: RunService,
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    plain = await tasks.create(task_spec("plain", executor="noop", params={}), principal=ALICE)
    given = await runs.trigger(plain.id, principal=ALICE, params={"sleep_seconds": 7})
    bare = await runs.trigger(plain.id, principal=ALICE)
    templates = TemplateService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    template = await templates.create(NAP, principal=OPERATOR)
    subscription = await templates.subscribe(template.id, {"params": {"n": 1}}, principal=ALICE)
    templated = await runs.trigger(subscription.id, principal=ALICE, params={"n": 2})
    # A new version: the retriggered run is rendered by it, with the same parameters.
    await templates.update(
        template.id, {"params": {"sleep_seconds": "{{n}}", "fail": True}}, principal=OPERATOR
    )
    originals = [given.id, bare.id, templated.id]
    operation = await bulk.start(
        BulkAction.RETRIGGER_RUNS, Selection(ids=tuple(originals)), principal=ALICE
    )
    finished = await bulk.wait(operation.id, principal=ALICE, timeout=10)
    assert finished.succeeded == 3, finished.results
    again = {r["id"]: await runs.get(r["run_id"], principal=ALICE) for r in finished.results}
    assert again[given.id].run_params == {"sleep_seconds": 7}
    assert again[given.id].params == {"sleep_seconds": 7}
    assert (again[bare.id].run_params, again[bare.id].params) == (None, None)
    assert again[templated.id].run_params == {"n": 2}
    assert again[templated.id].params == {"sleep_seconds": 2, "fail": True}
    assert again[templated.id].template_version == 2

    for run_id in originals:
        await runs.cancel(run_id, principal=ALICE)
    retried = await bulk.start(
        BulkAction.RETRY_RUNS, Selection(ids=(templated.id,)), principal=ALICE
    )
    done = await bulk.wait(retried.id, principal=ALICE, timeout=10)
    retry = await runs.get(done.results[0]["run_id"], principal=ALICE)
    # A retry is a further attempt of the same run: its params and version as they were.
    assert (retry.run_params, retry.params) == ({"n": 2}, {"sleep_seconds": 2})
    assert retry.template_version == 1


async def test_a_retrigger_whose_parameters_the_template_no_longer_accepts_fails_naming_them(
    bulk: BulkService,
    runs: RunService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    templates = TemplateService(
        uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
    )
    template = await templates.create(NAP, principal=OPERATOR)
    subscription = await templates.subscribe(template.id, {"params": {"n": 1}}, principal=ALICE)
    run = await runs.trigger(subscription.id, principal=ALICE, params={"n": 50})
    schema = {**NAP["params_schema"], "properties": {"n": {"type": "integer", "maximum": 9}}}
    await templates.update(template.id, {"params_schema": schema}, principal=OPERATOR)
    operation = await bulk.start(
        BulkAction.RETRIGGER_RUNS, Selection(ids=(run.id,)), principal=ALICE
    )
    finished = await bulk.wait(operation.id, principal=ALICE, timeout=10)
    assert finished.failed == 1
    assert str(finished.results[0]["detail"]).startswith("params.n: ")
