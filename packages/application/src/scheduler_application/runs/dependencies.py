"""Dependencies: when upstream runs finish, dependents run (or are skipped) once per logical time.

How it works (a dispatcher loop, safe with several dispatchers):

* A run *finishes for its dependents* when it reaches a terminal status: ``succeeded``,
  ``dead_lettered`` (a failure with no attempt left) or ``cancelled``. A failed attempt with a
  retry does not: its retry will.
* :meth:`DependencyResolver.resolve_finished` takes, with ``FOR UPDATE SKIP LOCKED``, such runs
  of tasks that *have dependents* and whose ``dependents_resolved_at`` is still empty, evaluates
  each dependent for the run's logical time, and marks the runs resolved in the same
  transaction. Runs of tasks nobody depends on are never read or written: the query starts from
  the dependency edges. A run is marked only once all its dependents were evaluated.
* Each dependent is evaluated under its task row's lock (skip-locked: a dependent another
  dispatcher is evaluating is left for the next pass), against the *latest attempt* of each of
  its upstreams for that logical time. So two upstreams finishing at the same instant, resolved by
  two dispatchers, still yield one evaluation that sees both; the unique keys (``(task,
  scheduled_for, attempt)`` and the idempotency key ``dependency:<logical time>``) are the last
  guard.
* Trigger rules (Airflow's), over upstreams that *succeeded*, *failed* (``dead_lettered`` or
  ``cancelled``) or were *skipped* for that logical time (a ``skipped`` decision, no run):
  ``all_success`` runs when every upstream succeeded and is skipped as soon as one failed or was
  skipped; ``all_failed`` runs when every upstream failed and is skipped as soon as one succeeded
  or was skipped; ``all_done`` runs when every upstream ended, however; ``one_success`` runs on
  the first success and is skipped when all ended without one; ``one_failed`` runs on the first
  failure and is skipped when all ended without one; ``none_failed`` runs when all ended and none
  failed, and is skipped as soon as one failed; ``none_skipped`` runs when all ended and none was
  skipped, and is skipped as soon as one was; ``always`` runs as soon as its first upstream ends
  for that logical time (that is when it is first evaluated), whatever the outcome. A dependent
  whose rule cannot be met is recorded skipped (``dependency_failed``, or ``paused`` for a paused
  task whose rule is met) and the skip propagates: its own dependents are evaluated at once with
  it counted as skipped.
* Only runs finished within ``horizon`` (and after the dependent was created) are considered, so
  adding a dependency to a long-lived task does not replay its history.
* Upstreams meet on a logical time: a dependent of two upstreams runs for the logical times both
  produced (give them the same schedule, or one root; a manual trigger may name the logical
  time it runs for, so a hand-started upstream can complete a fan-in). A dependent that also
  has a schedule fires on it as well; either way a logical time gets at most one run (the
  unique key decides).
* Dependency runs are not subject to the concurrency policy (that governs schedule slots);
  ``max_concurrent``, rate limits and routing apply to them in the relay like to any run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_application.dispatch.outbox import Outbox
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import AlreadyExists
from scheduler_application.events.log import add_decisions
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import format_instant
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task, TriggerRule

logger = logging.getLogger("scheduler.dependencies")

RESOLVER_ACTOR = "dependencies"
DEFAULT_BATCH = 100
DEFAULT_HORIZON = timedelta(days=1)
#: Statuses after which an attempt has nothing more to say to its dependents.
TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.DEAD_LETTERED, RunStatus.CANCELLED})
_SKIPS = frozenset({SkipReason.DEPENDENCY_FAILED, SkipReason.PAUSED})


class UpstreamState(StrEnum):
    WAITING = "waiting"  # no run yet, or its latest attempt is still going (or will be retried)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # ended without success: dead-lettered or cancelled
    SKIPPED = "skipped"  # no run for this logical time, and a decision saying why


class Verdict(StrEnum):
    RUN = "run"
    SKIP = "skip"
    WAIT = "wait"


def evaluate_rule(rule: TriggerRule, states: Sequence[UpstreamState]) -> Verdict:
    """Whether a dependent with ``rule`` runs, is skipped, or waits, given its upstreams.

    A rule is decided as soon as the upstreams still waiting cannot change the outcome: it runs
    when every way they could end satisfies it, is skipped when none does, and waits otherwise.
    """
    counts = Counter(states)
    succeeded, failed = counts[UpstreamState.SUCCEEDED], counts[UpstreamState.FAILED]
    skipped, waiting = counts[UpstreamState.SKIPPED], counts[UpstreamState.WAITING]
    done = not waiting
    if rule is TriggerRule.ALWAYS:
        return Verdict.RUN
    if rule is TriggerRule.ALL_DONE:
        return _verdict(run=done, skip=False)
    if rule is TriggerRule.ALL_SUCCESS:
        return _verdict(run=succeeded == len(states), skip=bool(failed or skipped))
    if rule is TriggerRule.ALL_FAILED:
        return _verdict(run=failed == len(states), skip=bool(succeeded or skipped))
    if rule is TriggerRule.ONE_SUCCESS:
        return _verdict(run=bool(succeeded), skip=done and not succeeded)
    if rule is TriggerRule.ONE_FAILED:
        return _verdict(run=bool(failed), skip=done and not failed)
    if rule is TriggerRule.NONE_FAILED:
        return _verdict(run=done and not failed, skip=bool(failed))
    if rule is TriggerRule.NONE_SKIPPED:
        return _verdict(run=done and not skipped, skip=bool(skipped))
    raise ValueError(f"unknown trigger rule {rule!r}")


def _verdict(*, run: bool, skip: bool) -> Verdict:
    if run:
        return Verdict.RUN
    return Verdict.SKIP if skip else Verdict.WAIT


def upstream_state(latest: TaskRun | None, skipped: bool) -> UpstreamState:
    """The state of one upstream from its latest attempt (or its skip decision)."""
    if latest is None:
        return UpstreamState.SKIPPED if skipped else UpstreamState.WAITING
    if latest.status is RunStatus.SUCCEEDED:
        return UpstreamState.SUCCEEDED
    if latest.status in (RunStatus.DEAD_LETTERED, RunStatus.CANCELLED):
        return UpstreamState.FAILED
    return UpstreamState.WAITING


def dependency_key(logical_time: datetime) -> str:
    """The idempotency key of a dependent's run for one logical time."""
    return f"dependency:{format_instant(logical_time)}"


@dataclass(slots=True)
class ResolutionReport:
    resolved: int = 0  # upstream runs marked resolved
    deferred: int = 0  # left for the next pass (a dependent was locked elsewhere)
    created: list[TaskRun] = field(default_factory=list)
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    duplicates: int = 0
    published: int = 0


class DependencyResolver:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        relay: RunRelay,
        horizon: timedelta = DEFAULT_HORIZON,
        observer: RunObserver = NO_OBSERVER,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``tracer``: every dependent run starts a trace of its own (``run.dependency``)."""
        self._uow_factory = uow_factory
        self._clock = clock
        self._relay = relay
        self._horizon = horizon
        self._observer = observer
        self._tracer = tracer

    async def resolve_finished(self, limit: int = DEFAULT_BATCH) -> ResolutionReport:
        """Evaluate the dependents of up to ``limit`` finished upstream runs; the runs created
        pass the relay's gates in the same transaction and are published after it."""
        now = self._clock.now()
        report = ResolutionReport()
        async with self._relay.outbox(self._uow_factory()) as box:
            uow = box.uow
            runs = await uow.runs.finished_upstream_runs(since=now - self._horizon, limit=limit)
            if not runs:
                return report
            done: list[str] = []
            evaluated: dict[tuple[str, datetime], bool] = {}
            for run in runs:
                key = (run.task_id, run.scheduled_for)
                if key not in evaluated:
                    evaluated[key] = await self._upstream_finished(box, run, now, report)
                if evaluated[key]:
                    done.append(run.id)
                else:
                    report.deferred += 1
            if done:
                await uow.runs.mark_dependents_resolved(done, at=now)
            report.resolved = len(done)
            await box.commit()
        if report.created:
            self._observer.run_created(RunTrigger.DEPENDENCY.value, len(report.created))
        for reason, count in report.skipped.items():
            self._observer.slot_skipped(reason.value, count)
        if box.sent.published:
            report.published = len(box.sent.messages)
        return report

    async def _upstream_finished(
        self, box: Outbox, run: TaskRun, now: datetime, report: ResolutionReport
    ) -> bool:
        """Evaluate every dependent of ``run``'s task; False if one could not be locked."""
        finished_at = run.finished_at or now
        complete = True
        for dependent in await box.uow.tasks.dependents(run.task_id):
            if dependent.created_at > finished_at:
                continue  # it did not exist when the upstream finished
            complete &= await self._evaluate(box, dependent, run.scheduled_for, now, report)
        return complete

    async def _evaluate(
        self,
        box: Outbox,
        task: Task,
        logical_time: datetime,
        now: datetime,
        report: ResolutionReport,
    ) -> bool:
        uow = box.uow
        if task.id not in await uow.tasks.lock_many([task.id]):
            return False
        if await uow.runs.for_logical_time([task.id], logical_time):
            return True  # it has its run for this logical time already
        states = await self._states(uow, task, logical_time)
        verdict = evaluate_rule(task.trigger_rule, [states[u] for u in task.depends_on])
        if verdict is Verdict.WAIT:
            return True
        detail: dict[str, object] = {
            "trigger_rule": task.trigger_rule.value,
            "upstreams": {u: states[u].value for u in task.depends_on},
        }
        if verdict is Verdict.RUN and task.enabled:
            await self._create(box, task, logical_time, now, detail, report)
            return True
        reason = SkipReason.DEPENDENCY_FAILED if verdict is Verdict.SKIP else SkipReason.PAUSED
        if not await self._already_skipped(uow, task, logical_time):
            await add_decisions(
                uow,
                [
                    SlotDecision(
                        task_id=task.id,
                        slot=logical_time,
                        outcome=SlotOutcome.SKIPPED,
                        at=now,
                        reason=reason,
                        detail=detail,
                    )
                ],
                tasks=[task],
            )
            report.skipped[reason] += 1
        complete = True
        for dependent in await uow.tasks.dependents(task.id):  # the skip propagates
            complete &= await self._evaluate(box, dependent, logical_time, now, report)
        return complete

    async def _states(
        self, uow: UnitOfWork, task: Task, logical_time: datetime
    ) -> dict[str, UpstreamState]:
        latest: dict[str, TaskRun] = {}
        for attempt in await uow.runs.for_logical_time(list(task.depends_on), logical_time):
            current = latest.get(attempt.task_id)
            if current is None or attempt.attempt > current.attempt:
                latest[attempt.task_id] = attempt
        without_run = [u for u in task.depends_on if u not in latest]
        skipped: set[str] = set()
        if without_run:
            decisions = await uow.decisions.for_slot(without_run, logical_time)
            skipped = {d.task_id for d in decisions if d.outcome is SlotOutcome.SKIPPED}
        return {u: upstream_state(latest.get(u), u in skipped) for u in task.depends_on}

    async def _already_skipped(self, uow: UnitOfWork, task: Task, logical_time: datetime) -> bool:
        decisions = await uow.decisions.for_slot([task.id], logical_time)
        return any(d.outcome is SlotOutcome.SKIPPED and d.reason in _SKIPS for d in decisions)

    async def _create(
        self,
        box: Outbox,
        task: Task,
        logical_time: datetime,
        now: datetime,
        detail: dict[str, object],
        report: ResolutionReport,
    ) -> None:
        run = TaskRun.create(
            task,
            trigger=RunTrigger.DEPENDENCY,
            logical_time=logical_time,
            now=now,
            idempotency_key=dependency_key(logical_time),
            traceparent=self._tracer.start_trace(
                "run.dependency",
                attributes={
                    "scheduler.task_id": task.id,
                    "scheduler.logical_time": format_instant(logical_time),
                },
            ),
        )
        created = run.created_event(actor=RESOLVER_ACTOR)
        admitted = await box.admit([run], tasks=[task])
        [run] = admitted.runs
        try:
            await box.uow.runs.add(run)
        except AlreadyExists:
            box.discard({run.id})
            report.duplicates += 1
            return
        await box.uow.events.add_many([created, *admitted.events])
        await box.uow.decisions.add(
            SlotDecision(
                task_id=task.id,
                slot=logical_time,
                outcome=SlotOutcome.FIRED,
                at=now,
                run_id=run.id,
                detail={"trigger": RunTrigger.DEPENDENCY.value, **detail},
            )
        )
        report.created.append(run)
