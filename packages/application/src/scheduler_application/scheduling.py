"""Firing schedules on time: due tasks become runs, once per slot, with every decision recorded.

One call of :meth:`ScheduleFiring.fire_due_tasks` claims a batch of due tasks (``FOR UPDATE SKIP
LOCKED``, so several dispatchers share the work and never fire a slot twice), and for each in
**one transaction**: lists the slots from ``next_run_at`` up to now, applies the misfire policy
(late slots beyond what it keeps are recorded ``misfire``), applies the concurrency policy slot
by slot (``forbid`` and ``buffer_one`` skip, ``replace`` cancels the runs in the way), creates the
runs (trigger ``schedule``, logical time = the slot, idempotency key ``schedule:<slot>``, spread
over ``not_before``), records a decision per slot, and advances ``next_run_at`` past now. After
the commit the new runs are handed to the relay at once; if that fails the relay loop publishes
them later. A slot some other path already created (the unique ``(task, slot, attempt)`` key) is
counted as a duplicate, never an error that would abort the batch.

After a long outage the slots are not all enumerated: when there are more than
:data:`SCAN_LIMIT`, only a window ending now that holds every on-time slot and the late slots the
policy may keep is listed, and the older ones are recorded as one aggregated ``misfire``
decision. Work per task is bounded whatever the outage.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler_application.errors import AlreadyExists, Conflict
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_application.relay import RunRelay
from scheduler_domain.concurrency import ConcurrencyAction, ConcurrencyPolicy, decide_concurrency
from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.misfire import MisfireKind, MisfirePolicy, select_slots
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import Schedule, format_instant, slots_between
from scheduler_domain.spread import spread_offset
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

logger = logging.getLogger("scheduler.scheduling")

SCHEDULER_ACTOR = "scheduler"
DEFAULT_BATCH = 100
#: Most slots listed per task and tick; more means an outage, handled by a window (see above).
SCAN_LIMIT = 256
#: Missed slots recorded one by one per task and tick; older ones share one decision.
MAX_MISSED_DECISIONS = 50
_SEARCH_STEPS = 24
_TICK = timedelta(microseconds=1)
_SEC = timedelta(seconds=1)


def schedule_key(slot: datetime) -> str:
    """The idempotency key of a scheduled slot's run."""
    return f"schedule:{format_instant(slot)}"


@dataclass(slots=True)
class FiringReport:
    """What one tick did; ``skipped`` counts slots by reason (the metrics exporter reads it)."""

    tasks: int = 0
    created: list[TaskRun] = field(default_factory=list)
    skipped: Counter[SkipReason] = field(default_factory=Counter)
    duplicates: int = 0
    cancelled: int = 0
    published: int = 0
    #: Slot → publication, for each run this tick published.
    lateness: list[timedelta] = field(default_factory=list)
    publish_error: str | None = None

    @property
    def fired(self) -> int:
        return len(self.created)


@dataclass(frozen=True, slots=True)
class DueSlots:
    """The slots listed for one task, ascending, and the older ones that were not listed."""

    slots: list[datetime]
    unlisted: int = 0
    unlisted_from: datetime | None = None
    unlisted_until: datetime | None = None


def due_slots(
    schedule: Schedule, first: datetime, now: datetime, policy: MisfirePolicy
) -> DueSlots:
    """The slots in ``[first, now]`` the misfire policy needs to see (see the module docstring).

    ``first`` is the task's ``next_run_at``, itself a slot. Past :data:`SCAN_LIMIT` slots, a
    window ``(start, now]`` is searched (doubling and halving its span) that lists fewer than
    that many slots yet holds the late slots the policy may fire."""
    if first > now:
        return DueSlots([])
    head = [first, *slots_between(schedule, first, now, limit=SCAN_LIMIT - 1)]
    if len(head) < SCAN_LIMIT:
        return DueSlots(head)
    keep = {MisfireKind.SKIP: 0, MisfireKind.RUN_ONCE: 1}.get(policy.kind, policy.catch_up_cap)
    period = (head[-1] - head[0]) / (len(head) - 1)
    span = policy.grace + period * (keep + MAX_MISSED_DECISIONS + 1)
    sparse: timedelta | None = None
    dense: timedelta | None = None
    start = now - span
    window: list[datetime] = []
    best: tuple[datetime, list[datetime]] | None = None
    for _ in range(_SEARCH_STEPS):
        start = max(now - span, first)
        window = slots_between(schedule, start, now, limit=SCAN_LIMIT)
        if len(window) >= SCAN_LIMIT:
            dense = span
        else:
            best = (start, window)
            if sum(1 for slot in window if now - slot > policy.grace) >= keep:
                break
            sparse = span
        if sparse is not None and dense is not None:
            if dense - sparse <= _SEC:
                break
            span = (sparse + dense) / 2
        elif dense is not None:
            span = max(span / 2, _TICK)
        else:
            span *= 2
    if best is not None:
        start, window = best
    unlisted = sum(1 for slot in head if slot <= start)
    return DueSlots(window, unlisted=unlisted, unlisted_from=first, unlisted_until=start)


#: Every slot listed is missed: what :func:`due_slots` is asked for when recording a pause.
_ALL_MISSED = MisfirePolicy(kind=MisfireKind.SKIP, grace=timedelta(0))


def missed_decisions(
    task_id: str,
    listed: DueSlots,
    missed: Sequence[datetime],
    *,
    reason: SkipReason,
    at: datetime,
    detail: Mapping[str, object] | None = None,
) -> list[tuple[SlotDecision, int]]:
    """The decisions recording ``missed`` (ascending, among ``listed.slots``) and the slots
    ``listed`` left out, each with the number of slots it stands for: the newest
    :data:`MAX_MISSED_DECISIONS` one by one, all older ones in one aggregated decision (whose
    count is a floor when ``listed`` left slots out: they were never enumerated)."""
    base = dict(detail or {})
    older = list(missed[: max(len(missed) - MAX_MISSED_DECISIONS, 0)])
    recent = missed[len(older) :]
    decisions: list[tuple[SlotDecision, int]] = []
    unlisted = listed.unlisted + len(older)
    if unlisted:
        first = listed.unlisted_from or older[0]
        until = older[-1] if older else listed.unlisted_until
        assert until is not None
        count_key = "count_at_least" if listed.unlisted else "count"
        aggregated = SlotDecision(
            task_id=task_id,
            slot=first,
            outcome=SlotOutcome.SKIPPED,
            at=at,
            reason=reason,
            detail={
                **base,
                "aggregated": True,
                "until": format_instant(until),
                count_key: unlisted,
            },
        )
        decisions.append((aggregated, unlisted))
    for slot in recent:
        decision = SlotDecision(
            task_id=task_id,
            slot=slot,
            outcome=SlotOutcome.SKIPPED,
            at=at,
            reason=reason,
            detail=dict(base),
        )
        decisions.append((decision, 1))
    return decisions


async def record_paused_slots(
    uow: UnitOfWork, task: Task, *, paused_at: datetime, resumed_at: datetime
) -> int:
    """Record the slots of ``task``'s schedule in ``(paused_at, resumed_at]`` as skipped with
    reason ``paused``; returns how many slots that is (a floor after a very long pause, like
    the ``misfire`` count after an outage).

    The task use cases call it when a paused task is resumed, and before any other edit of a
    paused task (which moves ``updated_at``, the mark of how far a pause is recorded). Bounded
    like firing: a window ending at ``resumed_at`` is listed, the newest
    :data:`MAX_MISSED_DECISIONS` slots one by one, everything older in one decision.
    """
    if task.schedule is None or resumed_at <= paused_at:
        return 0
    first = task.schedule.next_after(paused_at)
    if first is None or first > resumed_at:
        return 0
    listed = due_slots(task.schedule, first, resumed_at, _ALL_MISSED)
    decisions = missed_decisions(
        task.id, listed, listed.slots, reason=SkipReason.PAUSED, at=resumed_at
    )
    for decision, _ in decisions:
        await uow.decisions.add(decision)
    return sum(count for _, count in decisions)


class ScheduleFiring:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        relay: RunRelay | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._relay = relay
        self._observer = observer

    async def next_due_at(self) -> datetime | None:
        async with self._uow_factory() as uow:
            return await uow.tasks.next_due_at()

    async def seconds_until_due(self, *, at_most: float) -> float:
        """How long the scheduler may sleep: until the earliest ``next_run_at``, capped."""
        due = await self.next_due_at()
        if due is None:
            return at_most
        return min(max((due - self._clock.now()).total_seconds(), 0.0), at_most)

    async def fire_due_tasks(self, batch: int = DEFAULT_BATCH) -> FiringReport:
        """Fire every slot due now of up to ``batch`` tasks, then publish the new runs."""
        now = self._clock.now()
        report = FiringReport()
        async with self._uow_factory() as uow:
            due = await uow.tasks.due(now, limit=batch)
            if not due:
                return report
            report.tasks = len(due)
            for task in due:
                await self._fire_task(uow, task, now, report)
            await uow.commit()
        self._observe_committed(report)
        await self._publish(report)
        return report

    def _observe_committed(self, report: FiringReport) -> None:
        """Lateness is slot → fired (the run created), whichever relay then publishes it."""
        if report.created:
            self._observer.run_created(RunTrigger.SCHEDULE.value, len(report.created))
        for run in report.created:
            late = (run.created_at - run.scheduled_for).total_seconds()
            self._observer.schedule_lateness(max(late, 0.0))
        for reason, count in report.skipped.items():
            self._observer.slot_skipped(reason.value, count)
        for _ in range(report.cancelled):
            self._observer.run_finished(status=RunStatus.CANCELLED.value)

    # -- one task --------------------------------------------------------------------------------

    async def _fire_task(
        self, uow: UnitOfWork, task: Task, now: datetime, report: FiringReport
    ) -> None:
        first = task.next_run_at
        if task.schedule is None or first is None or not task.enabled:
            await uow.tasks.set_next_run_at(task.id, None)
            return
        listed = due_slots(task.schedule, first, now, task.misfire)
        selection = select_slots(task.misfire, listed.slots, now)
        await self._record_missed(uow, task, listed, selection.missed, now, report)
        active, waiting = await self._occupancy(uow, task)
        for slot in selection.fire:
            decision = decide_concurrency(task.concurrency, active=len(active), waiting=waiting)
            if decision.action is ConcurrencyAction.SKIP:
                reason = SkipReason(decision.reason or SkipReason.FORBID)
                await self._skip(uow, task, slot, reason, now, report)
                continue
            replaced: list[str] = []
            if decision.action is ConcurrencyAction.REPLACE:
                replaced = await self._cancel(uow, active, slot, now)
                report.cancelled += len(replaced)
                active, waiting = [], 0
            run = await self._create(uow, task, slot, now, replaced)
            if run is None:
                report.duplicates += 1
                continue
            report.created.append(run)
            active.append(run)
            waiting += 1
        await uow.tasks.set_next_run_at(task.id, task.schedule.next_after(now))

    async def _occupancy(self, uow: UnitOfWork, task: Task) -> tuple[list[TaskRun], int]:
        """The task's active runs (to cancel on ``replace``) and how many are not yet running."""
        if task.concurrency is ConcurrencyPolicy.ALLOW:
            return [], 0
        active = await uow.runs.active_for_task(task.id)
        running = [run for run in active if run.status is RunStatus.RUNNING]
        return active, len(active) - len(running)

    async def _create(
        self, uow: UnitOfWork, task: Task, slot: datetime, now: datetime, replaced: list[str]
    ) -> TaskRun | None:
        not_before = None
        if task.spread > timedelta(0):
            not_before = slot + spread_offset(task.id, slot, task.spread)
        run = TaskRun(
            task_id=task.id,
            owner_id=task.owner_id,
            trigger=RunTrigger.SCHEDULE,
            scheduled_for=slot,
            created_at=now,
            idempotency_key=schedule_key(slot),
            queue=task.queue,
            priority=task.priority,
            not_before=not_before,
        )
        try:
            await uow.runs.add(run)
        except AlreadyExists:
            return None  # another path created this slot's run: it has fired
        await uow.events.add(run.created_event(actor=SCHEDULER_ACTOR))
        detail: dict[str, object] = {"trigger": RunTrigger.SCHEDULE.value}
        if not_before is not None:
            detail["not_before"] = format_instant(not_before)
        if replaced:
            detail["replaced"] = replaced
        await uow.decisions.add(
            SlotDecision(
                task_id=task.id,
                slot=slot,
                outcome=SlotOutcome.FIRED,
                at=now,
                run_id=run.id,
                detail=detail,
            )
        )
        return run

    async def _cancel(
        self, uow: UnitOfWork, runs: Sequence[TaskRun], slot: datetime, now: datetime
    ) -> list[str]:
        """Cancel the runs a ``replace`` slot supersedes; one that moved on meanwhile is left."""
        cancelled: list[str] = []
        for run in runs:
            if run.status.is_final:
                continue
            read_version = run.version
            event = run.cancel(
                now=now, actor=SCHEDULER_ACTOR, reason=f"replaced by slot {format_instant(slot)}"
            )
            try:
                await uow.runs.update(run, expected_version=read_version)
            except Conflict:
                continue
            await uow.events.add(event)
            cancelled.append(run.id)
        return cancelled

    async def _skip(
        self,
        uow: UnitOfWork,
        task: Task,
        slot: datetime,
        reason: SkipReason,
        now: datetime,
        report: FiringReport,
    ) -> None:
        await uow.decisions.add(
            SlotDecision(
                task_id=task.id, slot=slot, outcome=SlotOutcome.SKIPPED, at=now, reason=reason
            )
        )
        report.skipped[reason] += 1

    async def _record_missed(
        self,
        uow: UnitOfWork,
        task: Task,
        listed: DueSlots,
        missed: Sequence[datetime],
        now: datetime,
        report: FiringReport,
    ) -> None:
        policy = {"misfire": task.misfire.kind.value, "grace_seconds": task.misfire.grace // _SEC}
        decisions = missed_decisions(
            task.id, listed, missed, reason=SkipReason.MISFIRE, at=now, detail=policy
        )
        for decision, count in decisions:
            await uow.decisions.add(decision)
            report.skipped[SkipReason.MISFIRE] += count

    # -- after the commit ------------------------------------------------------------------------

    async def _publish(self, report: FiringReport) -> None:
        if self._relay is None or not report.created:
            return
        slots = {run.id: run.scheduled_for for run in report.created}
        try:
            messages = await self._relay.relay_runs(list(slots))
        except Exception as error:  # the relay loop publishes them later
            report.publish_error = f"{type(error).__name__}: {error}"
            logger.warning("publishing fired runs failed (%s); the relay retries", error)
            return
        report.published = len(messages)
        report.lateness = [m.enqueued_at - slots[m.run_id] for m in messages]
