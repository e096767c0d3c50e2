"""Firing schedules on time: due tasks become runs, once per slot, with every decision recorded.

One call of :meth:`ScheduleFiring.fire_due_tasks` claims a batch of due tasks (``FOR UPDATE SKIP
LOCKED``, so several dispatchers share the work and never fire a slot twice), and for each in
**one transaction**: lists the slots from ``next_run_at`` up to now, applies the misfire policy
(late slots beyond what it keeps are recorded ``misfire``), applies the concurrency policy slot
by slot (``forbid`` and ``buffer_one`` skip, ``replace`` cancels the runs in the way), creates the
runs (trigger ``schedule``, logical time = the slot, idempotency key ``schedule:<slot>``, spread
over ``not_before``), records a decision per slot, and advances ``next_run_at`` past now. The
writes of the whole batch are buffered and sent together (a few statements per batch, not four
per task), and the new runs pass the relay's gates in the same transaction (through its
:class:`~scheduler_application.dispatch.outbox.Outbox`, like any new run): queued in the commit
that creates them, or pending for the relay loop when a spread, a gate, or a failing gate holds
them. A slot some other path already created
(the unique ``(task, slot, attempt)`` key) is counted as a duplicate, never an error that would
abort the batch.

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

from scheduler_application.dispatch.outbox import Outbox, Sent
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import Conflict
from scheduler_application.events.log import add_decisions
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.concurrency import ConcurrencyAction, ConcurrencyPolicy, decide_concurrency
from scheduler_domain.events import RunEvent, SkipReason, SlotDecision, SlotOutcome
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
    return await _record_paused(
        uow, task, first=task.schedule.next_after(paused_at), until=resumed_at
    )


async def record_unfired_at_pause(uow: UnitOfWork, task: Task, *, paused_at: datetime) -> int:
    """Record the slots of ``task`` already due when it is paused yet not fired by any
    dispatcher (from its ``next_run_at`` up to ``paused_at``) as skipped with reason
    ``paused``; returns how many. ``task`` must have been read with its row locked
    (``get(..., for_update=True)``), so that a dispatcher firing it meanwhile has committed and
    its ``next_run_at`` is past what it fired. :func:`record_paused_slots` takes the slots
    after ``paused_at`` when the task is resumed."""
    return await _record_paused(uow, task, first=task.next_run_at, until=paused_at)


async def _record_paused(
    uow: UnitOfWork, task: Task, *, first: datetime | None, until: datetime
) -> int:
    """The slots in ``[first, until]`` (``first`` a slot) as ``paused`` decisions, bounded
    like a misfire; how many slots they stand for."""
    if task.schedule is None or first is None or first > until:
        return 0
    listed = due_slots(task.schedule, first, until, _ALL_MISSED)
    decisions = missed_decisions(task.id, listed, listed.slots, reason=SkipReason.PAUSED, at=until)
    await add_decisions(uow, [decision for decision, _ in decisions], tasks=[task])
    return sum(count for _, count in decisions)


class ScheduleFiring:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        relay: RunRelay,
        observer: RunObserver = NO_OBSERVER,
        tracer: Tracer = NO_TRACER,
        fire_ahead: timedelta = timedelta(0),
    ) -> None:
        """``tracer``: every fired run starts a trace of its own (``run.schedule``).

        ``fire_ahead``: how long before its slot a task that may fire ahead
        (:attr:`Task.fires_ahead`) is claimed. Its runs are then written and queued before
        the slot and delivered at it (their ``not_before``: see :mod:`~.dispatch.gates`), so that
        the slot's lateness no longer includes the cost of firing it. 0: at the slot."""
        if fire_ahead < timedelta(0):
            raise ValueError("fire_ahead must not be negative")
        self._ahead = fire_ahead
        self._uow_factory = uow_factory
        self._clock = clock
        self._relay = relay
        self._observer = observer
        self._tracer = tracer

    async def next_due_at(self) -> datetime | None:
        async with self._uow_factory() as uow:
            return await uow.tasks.next_due_at(ahead=self._ahead)

    async def seconds_until_due(self, *, at_most: float) -> float:
        """How long the scheduler may sleep: until the earliest ``next_run_at``, capped."""
        due = await self.next_due_at()
        if due is None:
            return at_most
        return min(max((due - self._clock.now()).total_seconds(), 0.0), at_most)

    async def fire_due_tasks(self, batch: int = DEFAULT_BATCH) -> FiringReport:
        """Fire every slot due now (or within ``fire_ahead``, for the tasks that fire ahead)
        of up to ``batch`` tasks, queue the new runs that the relay's gates let go, commit,
        and publish them (see :meth:`_flush`)."""
        now = self._clock.now()
        report = FiringReport()
        async with self._relay.outbox(self._uow_factory()) as box:
            ahead_until = now + self._ahead if self._ahead else None
            due = await box.uow.tasks.due(now, limit=batch, ahead_until=ahead_until)
            if not due:
                return report
            report.tasks = len(due)
            writes = _Writes(tasks=due)
            for task in due:
                await self._fire_task(box, task, now, report, writes)
            await self._flush(box, writes, now, report)
            await box.commit()
        self._observe_committed(report)
        self._observe_sent(box.sent, report)
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
        self, box: Outbox, task: Task, now: datetime, report: FiringReport, writes: _Writes
    ) -> None:
        first = task.next_run_at
        if task.schedule is None or first is None or not task.enabled:
            writes.next_run_at.append((task.id, None))
            return
        # The slots up to ``until`` fire now: those still ahead are on time (misfire leaves
        # them be), and their runs are delivered at their slots.
        until = now + self._ahead if task.fires_ahead else now
        listed = due_slots(task.schedule, first, until, task.misfire)
        selection = select_slots(task.misfire, listed.slots, now)
        self._record_missed(task, listed, selection.missed, now, report, writes)
        active, waiting = await self._occupancy(box.uow, task)
        for slot in selection.fire:
            decision = decide_concurrency(task.concurrency, active=len(active), waiting=waiting)
            if decision.action is ConcurrencyAction.SKIP:
                reason = SkipReason(decision.reason or SkipReason.FORBID)
                self._skip(task, slot, reason, now, report, writes)
                continue
            replaced: list[str] = []
            if decision.action is ConcurrencyAction.REPLACE:
                # The runs to cancel may be this tick's own, still buffered: write them first.
                await self._flush(box, writes, now, report)
                active = [writes.written.get(run.id, run) for run in active]
                replaced = await self._cancel(box.uow, active, slot, now)
                report.cancelled += len(replaced)
                active, waiting = [], 0
            # Counted as active at once: a slot whose run turns out to exist already (a
            # duplicate, found when the batch is written) has that run active anyway.
            active.append(self._create(task, slot, now, replaced, writes))
            waiting += 1
        writes.next_run_at.append((task.id, task.schedule.next_after(until)))

    async def _occupancy(self, uow: UnitOfWork, task: Task) -> tuple[list[TaskRun], int]:
        """The task's active runs (to cancel on ``replace``) and how many are not yet running."""
        if task.concurrency is ConcurrencyPolicy.ALLOW:
            return [], 0
        active = await uow.runs.active_for_task(task.id)
        running = [run for run in active if run.status is RunStatus.RUNNING]
        return active, len(active) - len(running)

    def _create(
        self, task: Task, slot: datetime, now: datetime, replaced: list[str], writes: _Writes
    ) -> TaskRun:
        """A new run for ``slot``, its creation event and its ``fired`` decision, buffered."""
        not_before = None
        if task.spread > timedelta(0):
            not_before = slot + spread_offset(task.id, slot, task.spread)
        run = TaskRun.create(
            task,
            trigger=RunTrigger.SCHEDULE,
            logical_time=slot,
            now=now,
            idempotency_key=schedule_key(slot),
            not_before=not_before,
            traceparent=self._tracer.start_trace(
                "run.schedule",
                attributes={"scheduler.task_id": task.id, "scheduler.slot": format_instant(slot)},
            ),
        )
        detail: dict[str, object] = {"trigger": RunTrigger.SCHEDULE.value}
        if not_before is not None:
            detail["not_before"] = format_instant(not_before)
        if replaced:
            detail["replaced"] = replaced
        writes.runs.append(run)
        writes.events.append(run.created_event(actor=SCHEDULER_ACTOR))
        writes.fired[run.id] = SlotDecision(
            task_id=task.id,
            slot=slot,
            outcome=SlotOutcome.FIRED,
            at=now,
            run_id=run.id,
            detail=detail,
        )
        return run

    async def _flush(
        self, box: Outbox, writes: _Writes, now: datetime, report: FiringReport
    ) -> None:
        """Write what is buffered, in a handful of statements whatever the batch's size.

        The new runs due now first pass the relay's gates in this transaction
        (:meth:`Outbox.admit`, as a manual trigger's run does): those that may go are written
        ``queued``, their messages staged in the transaction when the queue lives in the
        database, or published right after the commit otherwise. A run whose spread puts it
        later, or that a gate holds, is written ``pending`` for the relay loop; so are all of
        them, as created, if a gate fails. A run whose slot already has one (the unique key)
        is not written, nor its events, decision or message: it counts as a duplicate."""
        uow = box.uow
        runs, events = writes.runs, writes.events
        writes.runs, writes.events = [], []
        ready = [run for run in runs if run.not_before is None or run.not_before <= now]
        if ready:
            try:
                admitted = await box.admit(ready, tasks=writes.tasks)
            except Exception as error:
                report.publish_error = f"{type(error).__name__}: {error}"
                logger.warning("queueing fired runs failed (%s); the relay loop takes them", error)
            else:
                gated = {run.id: run for run in admitted.runs}
                runs = [gated.get(run.id, run) for run in runs]
                events = [*events, *admitted.events]
        inserted = await box.insert_new(runs, events) if runs else set()
        for run in runs:
            fired = writes.fired.pop(run.id)
            if run.id in inserted:
                report.created.append(run)
                writes.decisions.append(fired)
                writes.written[run.id] = run
            else:
                report.duplicates += 1  # another path created this slot's run: it has fired
        box.discard({run.id for run in runs} - inserted)
        if writes.decisions:
            await add_decisions(uow, writes.decisions, tasks=writes.tasks)
            writes.decisions = []
        if writes.next_run_at:
            await uow.tasks.set_next_run_at_many(writes.next_run_at)
            writes.next_run_at = []

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

    def _skip(
        self,
        task: Task,
        slot: datetime,
        reason: SkipReason,
        now: datetime,
        report: FiringReport,
        writes: _Writes,
    ) -> None:
        writes.decisions.append(
            SlotDecision(
                task_id=task.id, slot=slot, outcome=SlotOutcome.SKIPPED, at=now, reason=reason
            )
        )
        report.skipped[reason] += 1

    def _record_missed(
        self,
        task: Task,
        listed: DueSlots,
        missed: Sequence[datetime],
        now: datetime,
        report: FiringReport,
        writes: _Writes,
    ) -> None:
        policy = {"misfire": task.misfire.kind.value, "grace_seconds": task.misfire.grace // _SEC}
        decisions = missed_decisions(
            task.id, listed, missed, reason=SkipReason.MISFIRE, at=now, detail=policy
        )
        for decision, count in decisions:
            writes.decisions.append(decision)
            report.skipped[SkipReason.MISFIRE] += count

    # -- after the commit ------------------------------------------------------------------------

    def _observe_sent(self, sent: Sent, report: FiringReport) -> None:
        """What the outbox handed to the queue after the commit (or staged in it). A publish
        that failed is retried by the relay in the background, and failing that the runs,
        ``queued``, are published again once stale."""
        if not sent.published:
            report.publish_error = "the queue did not take the fired runs"
            return
        slots = {run.id: run.scheduled_for for run in report.created}
        report.published += len(sent.messages)
        report.lateness.extend(
            max(m.enqueued_at - slots[m.run_id], timedelta(0)) for m in sent.messages
        )


@dataclass(slots=True)
class _Writes:
    """What a tick writes, buffered so that a batch of due tasks costs a few statements: the
    new runs with their creation events, their ``fired`` decisions (by run id, written once
    the run is), the other decisions, the tasks' new ``next_run_at``, and the runs written
    (by id, as the gates left them)."""

    tasks: Sequence[Task]
    runs: list[TaskRun] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    fired: dict[str, SlotDecision] = field(default_factory=dict)
    decisions: list[SlotDecision] = field(default_factory=list)
    next_run_at: list[tuple[str, datetime | None]] = field(default_factory=list)
    written: dict[str, TaskRun] = field(default_factory=dict)
