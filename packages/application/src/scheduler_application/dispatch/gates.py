"""The gates a pending run passes on its way to the queue, as one pipeline of small steps.

Every new run (a trigger, a retry, a fired slot, a dependency) and every pending run the relay
loop takes passes the same steps, in this order; each step decides once and the first that
stops a run decides its fate for this pass:

1. **concurrency cap** (:func:`concurrency_cap`): a task with that many runs queued or running
   keeps the rest pending (a ``buffer_one`` task counts as ``max_concurrent`` 1). The task's
   row is locked (skipping rows another transaction holds) while its runs are counted, so
   several dispatchers cannot each take "the last free slot". Tasks found full are remembered
   and left out of the relay's next queries until a slot frees.
2. **queue settings** (:mod:`scheduler_application.dispatch.queue_gate`): a run of a paused
   queue, or of one at its ``max_concurrency``, stays pending untouched; the queue's stored
   rate limit replaces its configured default in step 4.
2b. **fair share**: in a ``fair`` queue, a fairness key (the task's ``fairness_key``, else its
   owner) with ``fair_in_flight`` runs queued or running keeps the rest pending, untouched;
   the relay takes a fair queue's pending runs in turns across keys (``pending_fair``), so a
   key's backlog waits in the database, not in the broker ahead of other keys' runs.
3. **eligibility**: the live workers that may run the task (its labels, its queue). A task with
   required labels and no such worker is held pending (``no_eligible_worker``) and looked at
   again later (:func:`hold_for`) — before the rate limit, so that it spends no token.
3b. **circuit breakers** (:mod:`scheduler_application.limits.circuits`): a run bound for an open
   circuit (its named limits', its ``http`` destination host's) is postponed to the end of the
   cool-down with the reason ``circuit open: <name>``; one probe goes through after it.
3c. **named limits' concurrency**: a run bound to a named limit (the task's ``limits`` and its
   queue's) at its ``max_concurrency`` (runs queued or running of every task and queue bound to
   it) stays pending, untouched (counted as held, ``limit_concurrency``), as at a queue's cap.
   The limit's row is locked (skipping one another transaction holds) while its runs are
   counted; a run of a limit another dispatcher is deciding about waits for the next pass.
4. **rate limits** (:mod:`.rate_limiting`), the named limits' global and per-partition rates
   among them: a limited run gets a later ``not_before`` and a
   ``pending → pending`` event saying why; it is never dropped.
5. **routing** (:mod:`.routing`): among the eligible workers of step 3, where the message
   goes; the run is marked ``queued`` there.

A run fired ahead of its slot is queued now with ``not_before`` = its slot (delivered then); a
step that postpones a run never postpones it to before its slot.

The gates decide in memory and hand back new :class:`TaskRun` objects: the runs given are
never changed (a caller that fails later still holds them as they were). Writing and
publishing is the caller's (:mod:`.outbox`); this module does not know the queue.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from scheduler_application.dispatch.queue_gate import QueueDecisions
from scheduler_application.dispatch.queue_gate import decide as decide_queues
from scheduler_application.dispatch.rate_limiting import (
    RateBatch,
    RunRateLimits,
    SharedBucket,
    limit_key,
    partition_key,
)
from scheduler_application.dispatch.routing import Route, Router
from scheduler_application.limits.circuits import CircuitBreakers
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.circuits import Circuit
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.events import RunEvent
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import format_instant
from scheduler_domain.shared_limits import SharedLimit
from scheduler_domain.status import RunStatus
from scheduler_domain.task import DispatchStrategy, Task
from scheduler_domain.worker import Worker

RELAY_ACTOR = "relay"
#: What the gates change on a pending run: queued (status, time, where it went) or postponed
#: (``not_before``). The rows are locked, so only these need writing.
DISPATCHED_FIELDS = ("status", "queue", "queued_at", "not_before")


@dataclass(slots=True)
class GateOutcome:
    """What the gates decided about a batch of pending runs, in their order.

    ``runs``: every run given, as it leaves the gates (a new object where a gate changed it);
    ``writes``: the changed ones with the version read (to update rows that exist already);
    ``queued``: the ones marked queued (their messages go out); ``events``: to store after the
    runs they belong to; ``full_tasks``: tasks found at their concurrency cap;
    ``held_queues``: queues paused or at their ``max_concurrency``."""

    runs: list[TaskRun] = field(default_factory=list)
    writes: list[tuple[TaskRun, int]] = field(default_factory=list)
    queued: list[TaskRun] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    full_tasks: set[str] = field(default_factory=set)
    held_queues: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.writes)


@dataclass(slots=True)
class _Pass:
    """What one pass of the gates reads once and shares between the runs of the batch."""

    now: datetime
    tasks: Mapping[str, Task]
    locked: set[str]
    in_flight: dict[str, int]
    queues: QueueDecisions
    rate_batch: RateBatch | None
    workers: list[Worker] | None = None
    #: Named limits bound to the batch's runs; those with a ``max_concurrency`` this
    #: transaction locked, and their runs in flight.
    limits: dict[str, SharedLimit] = field(default_factory=dict)
    limits_locked: set[str] = field(default_factory=set)
    limit_in_flight: dict[str, int] = field(default_factory=dict)
    circuits: dict[str, Circuit] = field(default_factory=dict)
    #: (fair queue, fairness key) -> runs queued or running.
    fair_in_flight: dict[tuple[str, str], int] = field(default_factory=dict)


class Gates:
    """The pipeline; one instance per process (it remembers full tasks and routing history).
    ``stats`` (shared with the relay) counts ``held_max_concurrent``,
    ``held_no_eligible_worker``, ``rate_limited`` and ``routed_fallback``."""

    def __init__(
        self,
        *,
        clock: Clock,
        router: Router,
        rate_limits: RunRateLimits | None,
        stats: Counter[str],
        circuits: CircuitBreakers | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._clock = clock
        self._observer = observer
        self.circuits = circuits if circuits is not None else CircuitBreakers()
        self.router = router
        self._rate_limits = rate_limits
        self._stats = stats
        #: Tasks at their cap: id -> the cap, re-checked at the relay's next call.
        self._full: dict[str, int] = {}

    async def still_full(self, uow: UnitOfWork) -> set[str]:
        """The remembered full tasks that are still full; the others are forgotten."""
        if not self._full:
            return set()
        counts = await uow.runs.count_in_flight(sorted(self._full))
        self._full = {
            task_id: cap for task_id, cap in self._full.items() if counts.get(task_id, 0) >= cap
        }
        return set(self._full)

    async def apply(
        self,
        uow: UnitOfWork,
        runs: Sequence[TaskRun],
        now: datetime,
        known: Sequence[Task] = (),
    ) -> GateOutcome:
        """Pass pending ``runs`` through the steps, in order (``known``: their tasks, if the
        caller read them already in this unit of work)."""
        tasks = {task.id: task for task in known}
        if not all(run.task_id in tasks for run in runs):
            tasks = await tasks_of(uow, runs)
        state = await self._open_pass(uow, tasks, runs, now)
        outcome = GateOutcome()
        for run in runs:
            outcome.runs.append(await self._decide(uow, state, run, outcome))
        return outcome

    async def _open_pass(
        self, uow: UnitOfWork, tasks: Mapping[str, Task], runs: Sequence[TaskRun], now: datetime
    ) -> _Pass:
        capped = sorted(t.id for t in tasks.values() if concurrency_cap(t) is not None)
        locked: set[str] = set()
        in_flight: dict[str, int] = {}
        if capped:
            locked = await uow.tasks.lock_many(capped)
            in_flight = await uow.runs.count_in_flight(sorted(locked)) if locked else {}
        queues = await decide_queues(uow, (run.queue for run in runs))
        rates = self._rate_limits
        batch = rates.batch() if rates is not None else None
        state = _Pass(now, tasks, locked, in_flight, queues, batch)
        await self._read_limits(uow, state, runs)
        fair = sorted({run.queue for run in runs if queues.fair(run.queue) is not None})
        if fair:
            state.fair_in_flight = await uow.runs.count_in_flight_by_fair_key(fair)
        return state

    async def _read_limits(self, uow: UnitOfWork, state: _Pass, runs: Sequence[TaskRun]) -> None:
        names = {name for task in state.tasks.values() for name in task.limits}
        names.update(name for run in runs for name in state.queues.limits(run.queue))
        if names:
            state.limits = {lim.name: lim for lim in await uow.limits.get_many(sorted(names))}
        capped = sorted(name for name, lim in state.limits.items() if lim.max_concurrency)
        if capped:
            state.limits_locked = await uow.limits.lock_many(capped)
            if state.limits_locked:
                settings = await uow.queue_settings.list()
                bound = {
                    name: [q.name for q in settings if name in q.limits]
                    for name in sorted(state.limits_locked)
                }
                state.limit_in_flight = await uow.limits.count_in_flight(bound)
        circuit_names = {
            name
            for task in state.tasks.values()
            for name in self.circuits.names(task, state.limits)
        }
        if circuit_names:
            state.circuits = {c.name: c for c in await uow.circuits.get_many(sorted(circuit_names))}

    async def _decide(
        self, uow: UnitOfWork, state: _Pass, run: TaskRun, outcome: GateOutcome
    ) -> TaskRun:
        task = state.tasks.get(run.task_id)
        if task is None:
            return run  # deleted meanwhile: its runs go with it
        if not self._below_cap(state, task, outcome):
            return run
        if not self._queue_open(state, run, outcome):
            return run
        if not self._fair_turn(state, run, task):
            return run
        candidates = await self._eligible(uow, state, task)
        if candidates is None:
            # Held before the rate limit, so that a run no worker may take spends no token.
            return self._hold(outcome, run, task, state.now)
        names = self.circuits.names(task, state.limits)
        if names:
            held = await self.circuits.hold(
                uow, run, names, state.circuits, state.limits, now=state.now
            )
            if held is not None:
                self._held("circuit_open")
                return self._postpone(
                    outcome,
                    run,
                    until=held.until,
                    detail={"reason": f"circuit open: {held.circuit}", "circuit": held.circuit},
                )
        bound = self._bound_limits(state, run, task)
        if self._full_limit(state, bound) is not None:
            # Untouched, as at a queue's max_concurrency: no write per run and pass, the next
            # pass looks again (a postponement would waste the slots that free meanwhile).
            self._held("limit_concurrency")
            return run
        postponed = await self._rate_limit(state, run, task, outcome, bound)
        if postponed is not None:
            return postponed
        route = self.router.route(task, candidates, default_queue=run.queue)
        state.queues.admitted(run.queue)
        state.in_flight[task.id] = state.in_flight.get(task.id, 0) + 1
        for limit in bound:
            if limit.name in state.limit_in_flight:
                state.limit_in_flight[limit.name] += 1
        if state.queues.fair(run.queue) is not None:
            key = (run.queue, task.fair_share_key)
            state.fair_in_flight[key] = state.fair_in_flight.get(key, 0) + 1
        return self._queue(outcome, run, route, state.now)

    # -- 2b. fair share --------------------------------------------------------------------------

    def _fair_turn(self, state: _Pass, run: TaskRun, task: Task) -> bool:
        settings = state.queues.fair(run.queue)
        if settings is None:
            return True
        if state.fair_in_flight.get((run.queue, task.fair_share_key), 0) < settings.fair_in_flight:
            return True
        self._held("fair_share")
        return False

    def _held(self, reason: str) -> None:
        self._stats[f"held_{reason}"] += 1
        self._observer.run_held(reason)

    # -- 3c. named limits ------------------------------------------------------------------------

    @staticmethod
    def _bound_limits(state: _Pass, run: TaskRun, task: Task) -> list[SharedLimit]:
        names = dict.fromkeys((*task.limits, *state.queues.limits(run.queue)))
        return [state.limits[name] for name in names if name in state.limits]

    @staticmethod
    def _full_limit(state: _Pass, bound: Sequence[SharedLimit]) -> str | None:
        for limit in bound:
            if limit.max_concurrency is None:
                continue
            if limit.name not in state.limits_locked:
                return limit.name  # another transaction is deciding about it: next pass
            if state.limit_in_flight.get(limit.name, 0) >= limit.max_concurrency:
                return limit.name
        return None

    # -- 1. concurrency cap ----------------------------------------------------------------------

    def _below_cap(self, state: _Pass, task: Task, outcome: GateOutcome) -> bool:
        cap = concurrency_cap(task)
        if cap is None:
            return True
        if task.id not in state.locked:
            return False  # another transaction is deciding about this task: next pass
        if state.in_flight.get(task.id, 0) >= cap:
            self._full[task.id] = cap
            outcome.full_tasks.add(task.id)
            self._stats["held_max_concurrent"] += 1
            return False
        return True

    # -- 2. queue settings -----------------------------------------------------------------------

    def _queue_open(self, state: _Pass, run: TaskRun, outcome: GateOutcome) -> bool:
        held = state.queues.hold(run.queue)
        if held is None:
            return True
        outcome.held_queues.add(run.queue)  # stays pending, untouched, until the queue allows
        self._stats[f"held_{held}"] += 1
        return False

    # -- 3. eligibility --------------------------------------------------------------------------

    async def _eligible(self, uow: UnitOfWork, state: _Pass, task: Task) -> list[Worker] | None:
        """The workers the router may choose from ([] when the task's queue decides); None
        when the task requires labels no live worker carries."""
        if task.strategy is DispatchStrategy.QUEUE and not task.labels:
            return []
        if state.workers is None:
            state.workers = await uow.workers.list()
        candidates = self.router.eligible(task, state.workers, now=state.now)
        if not candidates and task.labels:
            return None
        return candidates

    def _hold(self, outcome: GateOutcome, run: TaskRun, task: Task, now: datetime) -> TaskRun:
        self._stats["held_no_eligible_worker"] += 1
        return self._postpone(
            outcome,
            run,
            until=now + hold_for(now - run.created_at),
            detail={"reason": "no_eligible_worker", "labels": sorted(task.labels)},
        )

    # -- 4. rate limits --------------------------------------------------------------------------

    async def _rate_limit(
        self,
        state: _Pass,
        run: TaskRun,
        task: Task,
        outcome: GateOutcome,
        bound: Sequence[SharedLimit] = (),
    ) -> TaskRun | None:
        rates = self._rate_limits
        queue_limit = state.queues.rate_limit(run.queue)
        if rates is None or state.rate_batch is None:
            return None
        shared = shared_buckets(bound, task)
        if not rates.limited(task, queue_limit=queue_limit) and not shared:
            return None
        delay = await rates.admit(
            task, now=state.now, batch=state.rate_batch, queue_limit=queue_limit, shared=shared
        )
        if delay is None:
            return None
        self._stats["rate_limited"] += 1
        return self._postpone(
            outcome,
            run,
            until=state.now + delay.wait,
            detail={"reason": "rate_limited", "bucket": delay.key},
        )

    def _postpone(
        self, outcome: GateOutcome, run: TaskRun, *, until: datetime, detail: dict[str, object]
    ) -> TaskRun:
        """Keep the run pending until ``until``, saying why in a ``pending → pending`` event;
        never until before its logical time (a run fired ahead waits for its slot whatever held
        it; every other run's is past already)."""
        until = max(until, run.scheduled_for)
        version = run.version
        run = copy.copy(run)
        run.not_before = until
        outcome.writes.append((run, version))
        outcome.events.append(
            RunEvent(
                run_id=run.id,
                task_id=run.task_id,
                from_status=RunStatus.PENDING,
                to_status=RunStatus.PENDING,
                at=self._clock.now(),
                actor=RELAY_ACTOR,
                detail={**detail, "not_before": format_instant(until)},
            )
        )
        return run

    # -- 5. routing ------------------------------------------------------------------------------

    def _queue(self, outcome: GateOutcome, run: TaskRun, route: Route, now: datetime) -> TaskRun:
        """Mark the run queued where ``route`` says. A run fired ahead of its slot is queued
        now, to be delivered at the slot: its ``not_before`` (and its message's) says when."""
        version = run.version
        run = copy.copy(run)
        run.queue = route.queue
        event = run.mark_queued(now=now, actor=RELAY_ACTOR)
        if run.trigger is RunTrigger.SCHEDULE and run.scheduled_for > now:  # fired ahead
            run.not_before = run.scheduled_for
            event = replace(
                event, detail={**event.detail, "deliver_at": format_instant(run.scheduled_for)}
            )
        if route.targeted:
            event = replace(event, detail={**event.detail, **route.detail()})
            if route.fallback:
                self._stats["routed_fallback"] += 1
        outcome.writes.append((run, version))
        outcome.queued.append(run)
        outcome.events.append(event)
        return run


def shared_buckets(bound: Sequence[SharedLimit], task: Task) -> list[SharedBucket]:
    """The token buckets of the named limits a run of ``task`` is bound to: every partition's
    first, then the global ones — a partition that refuses takes no global token, so the
    global rate is spent only on runs that go out."""
    partitions: list[SharedBucket] = []
    globals_: list[SharedBucket] = []
    for limit in bound:
        partition = limit.partition_of(owner_id=task.owner_id, task_id=task.id)
        if partition is not None and limit.partition_rate is not None:
            partitions.append((partition_key(limit.name, partition), limit.partition_rate))
        if limit.rate is not None:
            globals_.append((limit_key(limit.name), limit.rate))
    return partitions + globals_


def concurrency_cap(task: Task) -> int | None:
    """How many runs of ``task`` may be queued or running at once (None: no limit): its
    ``max_concurrent``, and 1 under ``buffer_one`` — the buffered run waits, pending, until the
    active one has finished (succeeded, failed, cancelled, timed out or lost), as Temporal's
    ``BufferOne`` does, instead of starting beside it."""
    if task.concurrency is ConcurrencyPolicy.BUFFER_ONE:
        return 1
    return task.max_concurrent


def hold_for(waited: timedelta) -> timedelta:
    """How long a run no worker may take waits before the relay looks again: a second at
    first, then half as long as it has waited so far, at most a minute — a worker that starts
    is found quickly, and a run that waits for hours writes a dozen events, not thousands."""
    return min(max(waited / 2, timedelta(seconds=1)), timedelta(minutes=1))


async def tasks_of(uow: UnitOfWork, runs: Sequence[TaskRun]) -> dict[str, Task]:
    ids = list(dict.fromkeys(run.task_id for run in runs))
    return {task.id: task for task in await uow.tasks.get_many(ids)}
