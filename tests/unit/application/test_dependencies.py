"""Dependencies: trigger rules on latest attempts, skips that propagate, and races."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import ALICE, START, task_spec

from recording_queue import InMemoryRunQueue
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.runs.dependencies import (
    DependencyResolver,
    UpstreamState,
    Verdict,
    dependency_key,
    evaluate_rule,
)
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import (
    FakeClock,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
)
from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task, TriggerRule
from scheduler_domain.worker import Worker

pytestmark = pytest.mark.timeout(10)

T = START  # the logical time of the runs in these tests
S, F, W, K = (
    UpstreamState.SUCCEEDED,
    UpstreamState.FAILED,
    UpstreamState.WAITING,
    UpstreamState.SKIPPED,
)


@pytest.fixture
def resolver(
    uow_factory: InMemoryUnitOfWorkFactory, clock: FakeClock, relay: RunRelay
) -> DependencyResolver:
    return DependencyResolver(uow_factory=uow_factory, clock=clock, relay=relay)


async def make(tasks: TaskService, name: str, *upstreams: Task, **spec: Any) -> Task:
    return await tasks.create(
        task_spec(name, depends_on=[u.id for u in upstreams], **spec), principal=ALICE
    )


def finished(
    store: InMemoryStore,
    task: Task,
    status: RunStatus,
    *,
    attempt: int = 1,
    at: Any = None,
    logical_time: Any = T,
) -> TaskRun:
    """Seed a run of ``task`` for ``logical_time`` that ended (or not) with ``status``."""
    run = TaskRun(
        task_id=task.id,
        owner_id=task.owner_id,
        trigger=RunTrigger.MANUAL,
        scheduled_for=logical_time,
        created_at=START,
        attempt=attempt,
        status=status,
        finished_at=None if status.is_active else (at or START + timedelta(seconds=attempt)),
    )
    store.put("runs", run)
    return run


def runs_of(store: InMemoryStore, task: Task) -> list[TaskRun]:
    return sorted((r for r in store.rows("runs") if r.task_id == task.id), key=lambda r: r.attempt)


def decisions_of(store: InMemoryStore, task: Task) -> list[SlotDecision]:
    return [d for d in store.rows("decisions") if d.task_id == task.id]


def resolved(store: InMemoryStore) -> set[str]:
    return {mark.id for mark in store.rows("dependency_marks")}


@pytest.mark.parametrize(
    ("rule", "states", "verdict"),
    [
        (TriggerRule.ALL_SUCCESS, [S, S], Verdict.RUN),
        (TriggerRule.ALL_SUCCESS, [S, W], Verdict.WAIT),
        (TriggerRule.ALL_SUCCESS, [F, W], Verdict.SKIP),
        (TriggerRule.ALL_SUCCESS, [S, K], Verdict.SKIP),
        (TriggerRule.ALL_DONE, [S, F], Verdict.RUN),
        (TriggerRule.ALL_DONE, [K, F], Verdict.RUN),
        (TriggerRule.ALL_DONE, [S, W], Verdict.WAIT),
        (TriggerRule.ONE_SUCCESS, [S, W], Verdict.RUN),
        (TriggerRule.ONE_SUCCESS, [F, W], Verdict.WAIT),
        (TriggerRule.ONE_SUCCESS, [F, K], Verdict.SKIP),
        (TriggerRule.ALL_FAILED, [F, F], Verdict.RUN),
        (TriggerRule.ALL_FAILED, [F, W], Verdict.WAIT),
        (TriggerRule.ALL_FAILED, [S, W], Verdict.SKIP),
        (TriggerRule.ALL_FAILED, [F, K], Verdict.SKIP),
        (TriggerRule.ONE_FAILED, [F, W], Verdict.RUN),
        (TriggerRule.ONE_FAILED, [S, W], Verdict.WAIT),
        (TriggerRule.ONE_FAILED, [S, K], Verdict.SKIP),
        (TriggerRule.NONE_FAILED, [S, K], Verdict.RUN),
        (TriggerRule.NONE_FAILED, [S, W], Verdict.WAIT),
        (TriggerRule.NONE_FAILED, [F, W], Verdict.SKIP),
        (TriggerRule.NONE_SKIPPED, [S, F], Verdict.RUN),
        (TriggerRule.NONE_SKIPPED, [S, W], Verdict.WAIT),
        (TriggerRule.NONE_SKIPPED, [K, W], Verdict.SKIP),
        (TriggerRule.ALWAYS, [W, W], Verdict.RUN),
        (TriggerRule.ALWAYS, [K, F], Verdict.RUN),
    ],
)
def test_trigger_rules(rule: TriggerRule, states: list[UpstreamState], verdict: Verdict) -> None:
    assert evaluate_rule(rule, states) is verdict


#: Each rule as Airflow states it, over upstreams that have all ended.
AIRFLOW_RULES: dict[TriggerRule, Callable[[list[UpstreamState]], bool]] = {
    TriggerRule.ALL_SUCCESS: lambda ended: all(s is S for s in ended),
    TriggerRule.ALL_FAILED: lambda ended: all(s is F for s in ended),
    TriggerRule.ALL_DONE: lambda ended: True,
    TriggerRule.ONE_SUCCESS: lambda ended: S in ended,
    TriggerRule.ONE_FAILED: lambda ended: F in ended,
    TriggerRule.NONE_FAILED: lambda ended: F not in ended,
    TriggerRule.NONE_SKIPPED: lambda ended: K not in ended,
    TriggerRule.ALWAYS: lambda ended: True,
}


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_a_rule_is_decided_exactly_when_the_waiting_upstreams_cannot_change_it(
    rule: TriggerRule,
) -> None:
    """Brute force: run iff every way the waiting upstreams may end satisfies the rule, skip iff
    none does (``always`` aside: it never waits; and ``all_done`` waits for every upstream)."""
    holds = AIRFLOW_RULES[rule]
    for size in range(1, 5):
        for states in itertools.product([S, F, K, W], repeat=size):
            waiting = [i for i, s in enumerate(states) if s is W]
            outcomes = set()
            for ends in itertools.product([S, F, K], repeat=len(waiting)):
                ended = list(states)
                for i, end in zip(waiting, ends, strict=True):
                    ended[i] = end
                outcomes.add(holds(ended))
            if rule is TriggerRule.ALL_DONE and waiting:
                outcomes = {True, False}  # "done" is about the upstreams' end, not its outcome
            expected = (
                Verdict.RUN
                if outcomes == {True} or rule is TriggerRule.ALWAYS
                else Verdict.SKIP
                if outcomes == {False}
                else Verdict.WAIT
            )
            assert evaluate_rule(rule, list(states)) is expected, states


def test_every_trigger_rule_has_a_definition() -> None:
    assert set(AIRFLOW_RULES) == set(TriggerRule)


async def test_all_success_runs_the_dependent_once_when_every_upstream_succeeded(
    tasks: TaskService,
    resolver: DependencyResolver,
    store: InMemoryStore,
    queue: InMemoryRunQueue,
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b)
    runs = [finished(store, a, RunStatus.SUCCEEDED), finished(store, b, RunStatus.SUCCEEDED)]

    report = await resolver.resolve_finished()

    [run] = runs_of(store, d)
    assert (run.trigger, run.scheduled_for, run.idempotency_key) == (
        RunTrigger.DEPENDENCY,
        T,
        dependency_key(T),
    )
    assert run.status is RunStatus.QUEUED  # published right away
    assert [m.run_id for m in queue.published] == [run.id]
    [decision] = decisions_of(store, d)
    assert (decision.outcome, decision.run_id, decision.slot) == (SlotOutcome.FIRED, run.id, T)
    assert decision.detail["upstreams"] == {a.id: "succeeded", b.id: "succeeded"}
    assert resolved(store) == {r.id for r in runs}
    assert report.resolved == 2
    assert (await resolver.resolve_finished()).resolved == 0
    assert len(runs_of(store, d)) == 1


async def test_all_success_waits_for_the_last_upstream(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b)
    finished(store, a, RunStatus.SUCCEEDED)
    finished(store, b, RunStatus.RUNNING)
    await resolver.resolve_finished()
    assert runs_of(store, d) == []
    assert decisions_of(store, d) == []
    finished(store, b, RunStatus.SUCCEEDED, attempt=2)  # b's retry succeeded
    await resolver.resolve_finished()
    assert len(runs_of(store, d)) == 1


async def test_a_failed_upstream_skips_the_dependent_and_the_skip_propagates(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b)
    e = await make(tasks, "e", d)
    f = await make(tasks, "f", e, trigger_rule="all_done")
    finished(store, a, RunStatus.DEAD_LETTERED)

    report = await resolver.resolve_finished()

    for task in (d, e):
        [decision] = decisions_of(store, task)
        assert (decision.outcome, decision.reason, decision.slot) == (
            SlotOutcome.SKIPPED,
            SkipReason.DEPENDENCY_FAILED,
            T,
        )
        assert runs_of(store, task) == []
    assert decisions_of(store, d)[0].detail["upstreams"] == {a.id: "failed", b.id: "waiting"}
    # all_done counts a skipped upstream as done: f runs.
    assert [r.trigger for r in runs_of(store, f)] == [RunTrigger.DEPENDENCY]
    assert report.skipped == {SkipReason.DEPENDENCY_FAILED: 2}
    # b finishing later changes nothing: d was decided, and is not recorded twice.
    finished(store, b, RunStatus.SUCCEEDED)
    await resolver.resolve_finished()
    assert len(decisions_of(store, d)) == 1
    assert runs_of(store, d) == []


async def test_all_done_runs_after_a_success_and_a_cancellation(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b, trigger_rule="all_done")
    finished(store, a, RunStatus.SUCCEEDED)
    finished(store, b, RunStatus.CANCELLED)
    await resolver.resolve_finished()
    assert len(runs_of(store, d)) == 1


async def test_one_success_runs_on_the_first_success_only(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b, trigger_rule="one_success")
    finished(store, a, RunStatus.SUCCEEDED)
    finished(store, b, RunStatus.RUNNING)
    await resolver.resolve_finished()
    assert len(runs_of(store, d)) == 1
    finished(store, b, RunStatus.SUCCEEDED, attempt=2)
    await resolver.resolve_finished()
    assert len(runs_of(store, d)) == 1


async def test_one_success_is_skipped_when_every_upstream_failed(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b, trigger_rule="one_success")
    finished(store, a, RunStatus.DEAD_LETTERED)
    await resolver.resolve_finished()
    assert decisions_of(store, d) == []  # b may still succeed
    finished(store, b, RunStatus.CANCELLED)
    await resolver.resolve_finished()
    [decision] = decisions_of(store, d)
    assert decision.reason is SkipReason.DEPENDENCY_FAILED


async def test_the_latest_attempt_of_an_upstream_decides(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a = await make(tasks, "a")
    d = await make(tasks, "d", a)
    finished(store, a, RunStatus.CANCELLED)
    finished(store, a, RunStatus.PENDING, attempt=2)  # retried by hand before we looked
    await resolver.resolve_finished()
    assert decisions_of(store, d) == []
    finished(store, a, RunStatus.SUCCEEDED, attempt=3)
    await resolver.resolve_finished()
    assert len(runs_of(store, d)) == 1


async def test_a_retried_upstream_lets_a_skipped_dependent_run(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a = await make(tasks, "a")
    d = await make(tasks, "d", a)
    finished(store, a, RunStatus.DEAD_LETTERED)
    await resolver.resolve_finished()
    assert [x.reason for x in decisions_of(store, d)] == [SkipReason.DEPENDENCY_FAILED]
    finished(store, a, RunStatus.SUCCEEDED, attempt=2)
    await resolver.resolve_finished()
    assert len(runs_of(store, d)) == 1


async def test_two_upstreams_finishing_together_on_two_dispatchers_make_one_run(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    clock: FakeClock,
    relay: RunRelay,
    store: InMemoryStore,
) -> None:
    a, b = await make(tasks, "a"), await make(tasks, "b")
    d = await make(tasks, "d", a, b)
    finished(store, a, RunStatus.SUCCEEDED)
    finished(store, b, RunStatus.SUCCEEDED)
    resolvers = [
        DependencyResolver(uow_factory=uow_factory, clock=clock, relay=relay) for _ in range(2)
    ]
    for _ in range(3):
        await asyncio.gather(*(r.resolve_finished(limit=1) for r in resolvers))
    assert len(runs_of(store, d)) == 1
    assert len([x for x in decisions_of(store, d) if x.outcome is SlotOutcome.FIRED]) == 1
    assert len(resolved(store)) == 2


async def test_a_dependent_locked_elsewhere_is_deferred_not_lost(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    resolver: DependencyResolver,
    store: InMemoryStore,
) -> None:
    a = await make(tasks, "a")
    d = await make(tasks, "d", a)
    run = finished(store, a, RunStatus.SUCCEEDED)
    async with uow_factory() as other:
        assert await other.tasks.lock_many([d.id]) == {d.id}
        report = await resolver.resolve_finished()
        assert (report.resolved, report.deferred) == (0, 1)
    assert run.id not in resolved(store)
    await resolver.resolve_finished()
    assert run.id in resolved(store)
    assert len(runs_of(store, d)) == 1


async def test_runs_of_tasks_without_dependents_cost_nothing(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    lonely = await make(tasks, "lonely")
    finished(store, lonely, RunStatus.SUCCEEDED)
    commits = store.commits
    report = await resolver.resolve_finished()
    assert report.resolved == 0
    assert store.commits == commits
    assert resolved(store) == set()


async def test_a_paused_dependent_is_recorded_paused_and_its_dependents_skipped(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore
) -> None:
    a = await make(tasks, "a")
    d = await make(tasks, "d", a)
    e = await make(tasks, "e", d)
    await tasks.pause(d.id, principal=ALICE)
    finished(store, a, RunStatus.SUCCEEDED)
    report = await resolver.resolve_finished()
    assert [x.reason for x in decisions_of(store, d)] == [SkipReason.PAUSED]
    assert [x.reason for x in decisions_of(store, e)] == [SkipReason.DEPENDENCY_FAILED]
    assert report.skipped == {SkipReason.PAUSED: 1, SkipReason.DEPENDENCY_FAILED: 1}


async def test_a_dependent_created_after_the_upstream_finished_does_not_replay_it(
    tasks: TaskService, resolver: DependencyResolver, store: InMemoryStore, clock: FakeClock
) -> None:
    a = await make(tasks, "a")
    finished(store, a, RunStatus.SUCCEEDED, at=START)
    clock.advance(seconds=10)
    d = await make(tasks, "d", a)
    await resolver.resolve_finished()
    assert runs_of(store, d) == []


async def test_runs_finished_before_the_horizon_are_ignored(
    tasks: TaskService,
    uow_factory: InMemoryUnitOfWorkFactory,
    relay: RunRelay,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    a = await make(tasks, "a")
    d = await make(tasks, "d", a)
    finished(store, a, RunStatus.SUCCEEDED, at=START + timedelta(seconds=1))
    clock.advance(timedelta(hours=2))
    short = DependencyResolver(
        uow_factory=uow_factory, clock=clock, relay=relay, horizon=timedelta(hours=1)
    )
    assert (await short.resolve_finished()).resolved == 0
    assert runs_of(store, d) == []


async def test_a_diamond_runs_each_node_once_through_the_worker_protocol(
    tasks: TaskService,
    runs: RunService,
    relay: RunRelay,
    resolver: DependencyResolver,
    execution: ExecutionService,
    worker: Worker,
    queue: InMemoryRunQueue,
    store: InMemoryStore,
    clock: FakeClock,
) -> None:
    root = await make(tasks, "root")
    left, right = await make(tasks, "left", root), await make(tasks, "right", root)
    join = await make(tasks, "join", left, right)
    trigger = await runs.trigger(root.id, principal=ALICE)
    await relay.relay_pending()
    done: list[str] = []
    for _ in range(10):
        for message in list(queue.published):
            if message.run_id in done:
                continue
            claimed = await execution.claim(message.run_id, worker_id=worker.id)
            assert claimed is not None
            clock.advance(seconds=1)
            outcome = ExecutionResult(status="succeeded")
            await execution.complete(message.run_id, claimed.token, outcome)
            done.append(message.run_id)
        clock.advance(seconds=1)
        await resolver.resolve_finished()
    for task in (root, left, right, join):
        [run] = runs_of(store, task)
        assert (run.status, run.scheduled_for) == (RunStatus.SUCCEEDED, trigger.scheduled_for)
