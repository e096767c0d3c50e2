"""Many manual triggers in one request: ``POST /api/v1/runs/batch``.

Each item names its task and may carry its own idempotency key, priority (over the task's) and
logical time. The batch is one unit of work through the dispatch outbox: every valid item's run
passes the same gates as a single trigger (concurrency, queue settings, rate limits, routing),
is written with its creation event in one statement, and is published after the one commit, so
a thousand triggers cost about what one does plus their rows. Items are answered one by one, in
order — ``created``, ``replayed`` (its idempotency key named a run already: that run) or
``refused`` with the reason and the field — and one item's bad input never fails another.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler_application.accounts.access import (
    Principal,
    can_change,
    can_see,
    ensure_can_write_tasks,
)
from scheduler_application.dispatch.outbox import Outbox
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import (
    ApplicationError,
    Conflict,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.unit_of_work import (
    NeedsTransaction,
    StatementUnitOfWorkFactory,
    UnitOfWork,
    UnitOfWorkFactory,
)
from scheduler_application.runs.service import logical_time_of, stored_key
from scheduler_application.templates.subscriptions import run_params
from scheduler_domain.errors import DomainError, ValidationError
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import format_instant
from scheduler_domain.task import MAX_PRIORITY, Task

logger = logging.getLogger("scheduler.triggers")

#: A free logical time is looked for this many microseconds on at most, per item.
_MAX_SLOT_TRIES = 1_000
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerItem:
    task_id: str
    idempotency_key: str | None = None
    priority: int | None = None
    logical_time: datetime | None = None
    #: Run parameters, merged over the task's and validated like a single trigger's.
    params: dict[str, Any] | None = None
    #: The W3C trace the run joins (the request that asked for it).
    traceparent: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerOutcome:
    """``status``: ``created``, ``replayed`` or ``refused``; ``run`` for the first two;
    ``code``, ``field`` and ``detail`` say why an item was refused (``not_found``,
    ``validation_error``, ``conflict``, ``permission_denied``), and ``error`` is that refusal
    as the exception a single trigger would have raised."""

    status: str
    run: TaskRun | None = None
    code: str | None = None
    field: str | None = None
    detail: str | None = None
    error: ApplicationError | DomainError | None = None


def _refused(error: ApplicationError | DomainError, field: str) -> TriggerOutcome:
    return TriggerOutcome(
        status="refused",
        code=error.code,
        field=error.field or field,
        detail=error.message,
        error=error,
    )


class BatchTrigger:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        relay: RunRelay,
        observer: RunObserver = NO_OBSERVER,
        max_items: int = 1_000,
        statement_uow_factory: StatementUnitOfWorkFactory | None = None,
    ) -> None:
        """``statement_uow_factory``: triggers are first written in such a unit of work — their
        reads and one insert of the runs with their events (and, on the postgres queue, their
        messages), each committing on its own, with no ``BEGIN`` or ``COMMIT`` round trip —
        and again in a transaction when a gate needs one (a row lock, a write of its own)."""
        self._uow_factory = uow_factory
        self._statement_uow_factory = statement_uow_factory
        self._clock = clock
        self._relay = relay
        self._observer = observer
        self.max_items = max_items

    async def trigger(
        self, items: Sequence[TriggerItem], *, principal: Principal
    ) -> list[TriggerOutcome]:
        ensure_can_write_tasks(principal)
        if not items:
            raise ValidationError("triggers must hold at least one trigger", field="triggers")
        if len(items) > self.max_items:
            raise ValidationError(
                f"at most {self.max_items} triggers per request", field="triggers"
            )
        return await self.trigger_each([principal] * len(items), items)

    async def trigger_each(
        self, principals: Sequence[Principal], items: Sequence[TriggerItem]
    ) -> list[TriggerOutcome]:
        """Triggers of several callers in one unit of work: ``items[i]`` on behalf of
        ``principals[i]``, each refused on its own when that caller may not make it (the
        group commit of single triggers, :mod:`~scheduler_application.runs.trigger_group`)."""
        now = self._clock.now()
        answers: list[TriggerOutcome | None] = [None] * len(items)
        keys: list[str | None] = [None] * len(items)
        times: list[datetime] = [now] * len(items)
        #: Items of one task for "now" take successive microseconds, so that their runs do not
        #: collide on the task's logical time (one insert for all, not one per clash).
        for_now: Counter[str] = Counter()
        for i, item in enumerate(items):
            try:
                ensure_can_write_tasks(principals[i])
                keys[i] = stored_key(item.idempotency_key)
                if item.logical_time is not None:
                    times[i] = logical_time_of(item.logical_time, now=now)
                else:
                    times[i] = now + for_now[item.task_id] * _TICK
                    for_now[item.task_id] += 1
                if item.priority is not None and (
                    isinstance(item.priority, bool) or not 0 <= item.priority <= MAX_PRIORITY
                ):
                    raise ValidationError(
                        f"priority must be between 0 and {MAX_PRIORITY}", field="priority"
                    )
            except (ValidationError, ApplicationError) as error:
                answers[i] = _refused(error, "triggers")
        created: list[int] = []
        by_key: dict[tuple[str, str], int] = {}
        done = False
        if self._statement_uow_factory is not None:
            first_answers = list(answers)
            try:
                created, by_key = await self._trigger_in(
                    self._statement_uow_factory(),
                    items,
                    principals,
                    keys,
                    times,
                    answers,
                    now,
                    each_statement_commits=True,
                )
                done = True
            except NeedsTransaction:
                # Nothing was written: a gate locks rows, say. Again, in a transaction.
                answers[:] = first_answers
        if not done:
            created, by_key = await self._trigger_in(
                self._uow_factory(), items, principals, keys, times, answers, now
            )
        for i, item in enumerate(items):
            if answers[i] is None:  # a repeated key: the run its first item got
                first = by_key.get((item.task_id, keys[i] or ""))
                answer = answers[first] if first is not None else None
                answers[i] = (
                    TriggerOutcome(status="replayed", run=answer.run)
                    if answer is not None and answer.run is not None
                    else _refused(
                        Conflict(
                            "its idempotency key's first trigger was refused",
                            field="idempotency_key",
                        ),
                        "idempotency_key",
                    )
                )
        for _ in created:
            self._observer.run_created(RunTrigger.MANUAL.value)
        return [answer for answer in answers if answer is not None]

    async def _trigger_in(
        self,
        uow: UnitOfWork,
        items: Sequence[TriggerItem],
        principals: Sequence[Principal],
        keys: list[str | None],
        times: list[datetime],
        answers: list[TriggerOutcome | None],
        now: datetime,
        *,
        each_statement_commits: bool = False,
    ) -> tuple[list[int], dict[tuple[str, str], int]]:
        """The items' runs written through an outbox on ``uow``, then committed; the indices
        of the items that created a run, and the first item of each idempotency key.

        ``each_statement_commits``: ``uow`` is a statement unit of work, so each insert of
        runs is durable at once. Should something fail after one (a later insert of runs
        moved to a free logical time, say), the runs written are the answers of their items
        and the items not written yet are answered with the error, one by one: failing them
        all would have their callers (and the trigger group's retry item by item) make the
        keyless runs written again. (On the postgres queue their messages were written with
        them; a broker's wait for the relay's pass over stale queued runs.) Before any run is
        written, a failure (``NeedsTransaction`` among them) is raised, as in a transaction."""
        created: list[int] = []
        by_key: dict[tuple[str, str], int] = {}
        runs: dict[int, TaskRun] = {}
        committed = False
        try:
            async with self._relay.outbox(uow) as box:
                tasks, runs, by_key = await self._runs_for(
                    box.uow, items, principals, keys, times, answers, now
                )
                fixed = {i for i, item in enumerate(items) if i in runs and item.logical_time}
                created = await self._write(
                    box, runs, tasks, dict(enumerate(principals)), answers, fixed=fixed
                )
                await _commit(box)
                committed = True
        except Exception as error:
            if committed:
                # The runs are durable: they are the answers. What failed after the commit
                # (returning the connection, say) must not fail the requests, whose callers
                # (and the trigger group's item-by-item retry) would then make their keyless
                # runs again.
                logger.warning(
                    "triggers committed; leaving their transaction failed", exc_info=True
                )
            elif each_statement_commits and (created := _created(runs, answers)):
                logger.warning(
                    "%d triggers written; the other %d failed",
                    len(created),
                    sum(1 for i in runs if answers[i] is None),
                    exc_info=True,
                )
                failure = (
                    error
                    if isinstance(error, ApplicationError)
                    else Unavailable("the trigger could not be written", dependency="database")
                )
                for i in runs:
                    if answers[i] is None:
                        answers[i] = _refused(failure, "task_id")
            else:
                raise
        return created, by_key

    async def _runs_for(
        self,
        uow: UnitOfWork,
        items: Sequence[TriggerItem],
        principals: Sequence[Principal],
        keys: list[str | None],
        times: list[datetime],
        answers: list[TriggerOutcome | None],
        now: datetime,
    ) -> tuple[dict[str, Task], dict[int, TaskRun], dict[tuple[str, str], int]]:
        """The items' tasks, the run each item not yet answered makes (by item index), and the
        first item of each idempotency key; the items refused or replayed here are answered
        in ``answers``."""
        wanted = sorted({item.task_id for i, item in enumerate(items) if answers[i] is None})
        tasks: dict[str, Task] = {t.id: t for t in await uow.tasks.get_many(wanted)}
        # The runs the items' keys name already, in one read for the whole batch.
        stored = await uow.runs.get_by_idempotency_keys(
            [
                (item.task_id, key)
                for item, key, answer in zip(items, keys, answers, strict=True)
                if key is not None and answer is None and item.task_id in tasks
            ]
        )
        runs: dict[int, TaskRun] = {}
        by_key: dict[tuple[str, str], int] = {}
        #: Logical times asked for by items of this batch (two for one time: one conflict).
        chosen: set[tuple[str, datetime]] = set()
        for i, item in enumerate(items):
            if answers[i] is not None:
                continue
            task = tasks.get(item.task_id)
            if task is None or not can_see(principals[i], task.team_id):
                missing = NotFound(f"task {item.task_id} not found", field="task_id")
                answers[i] = _refused(missing, "task_id")
                continue
            if not can_change(principals[i], task.team_id):
                read_only = PermissionDenied(
                    f"task {item.task_id} is read-only to you (a viewer of its team)"
                )
                answers[i] = _refused(read_only, "task_id")
                continue
            key = keys[i]
            if key is not None:
                if (task.id, key) in by_key:
                    continue  # the same key twice in one batch: the first one's run
                existing = stored.get((task.id, key))
                if existing is not None:
                    answers[i] = TriggerOutcome(status="replayed", run=existing)
                    continue
                by_key[(task.id, key)] = i
            if item.logical_time is not None and (
                (task.id, times[i]) in chosen
                or await uow.runs.for_logical_time([task.id], times[i])
            ):
                taken = Conflict(
                    f"task {task.name!r} already has a run for logical time "
                    f"{format_instant(times[i])}",
                    field="logical_time",
                )
                answers[i] = _refused(taken, "logical_time")
                continue
            try:
                given = await run_params(uow, task, item.params)
            except (ValidationError, ApplicationError) as error:
                answers[i] = _refused(error, "params")
                if key is not None:
                    by_key.pop((task.id, key), None)
                continue
            run = given.apply(
                TaskRun.create(
                    task,
                    trigger=RunTrigger.MANUAL,
                    logical_time=times[i],
                    now=now,
                    idempotency_key=key,
                    traceparent=item.traceparent,
                )
            )
            if item.priority is not None:
                run.priority = item.priority
            if item.logical_time is not None:
                chosen.add((task.id, times[i]))
            runs[i] = run
        return tasks, runs, by_key

    async def _write(
        self,
        box: Outbox,
        runs: dict[int, TaskRun],
        tasks: dict[str, Task],
        principals: dict[int, Principal],
        answers: list[TriggerOutcome | None],
        *,
        fixed: set[int],
    ) -> list[int]:
        """Admit and insert the runs, moving a run whose logical time is taken (another
        trigger in the same microsecond) to the next free one, and answering a run whose
        idempotency key a concurrent request took with that request's run. A run whose
        logical time was asked for (``fixed``) is not moved: a concurrent run for it is a
        conflict."""
        if not runs:
            return []
        uow = box.uow
        order = list(runs)
        # Created as they were before the gates (pending), as a single trigger records it.
        events = {runs[i].id: [runs[i].created_event(actor=principals[i].actor)] for i in order}
        admitted = await box.admit([runs[i] for i in order], tasks=list(tasks.values()))
        written = dict(zip(order, admitted.runs, strict=True))
        for event in admitted.events:
            events[event.run_id].append(event)
        pending = dict(written)
        #: The latest logical time each task's runs in this batch take: a run whose time was
        #: taken moves past it, not onto the next of its neighbours' times.
        latest: dict[str, datetime] = {}
        for run in written.values():
            latest[run.task_id] = max(latest.get(run.task_id, run.scheduled_for), run.scheduled_for)
        created: list[int] = []
        for _ in range(_MAX_SLOT_TRIES):
            if not pending:
                break
            batch = list(pending.values())
            inserted = await box.insert_new(batch, [e for run in batch for e in events[run.id]])
            clashed: dict[int, TaskRun] = {}
            for i, run in pending.items():
                if run.id in inserted:
                    answers[i] = TriggerOutcome(status="created", run=run)
                    created.append(i)
                    continue
                key = run.idempotency_key
                taken = (
                    await uow.runs.get_by_idempotency_key(run.task_id, key)
                    if key is not None
                    else None
                )
                if taken is not None:
                    box.discard({run.id})
                    answers[i] = TriggerOutcome(status="replayed", run=taken)
                elif i in fixed:
                    box.discard({run.id})
                    answers[i] = _refused(
                        Conflict(
                            "the task got a run for that logical time meanwhile",
                            field="logical_time",
                        ),
                        "logical_time",
                    )
                else:
                    run.scheduled_for = latest[run.task_id] = latest[run.task_id] + _TICK
                    clashed[i] = run
            pending = clashed
        for i, run in pending.items():
            box.discard({run.id})
            answers[i] = _refused(
                Conflict("no free logical time near the one asked for", field="logical_time"),
                "logical_time",
            )
        return created


def _created(runs: dict[int, TaskRun], answers: list[TriggerOutcome | None]) -> list[int]:
    """The items whose runs were written (answered ``created``)."""
    return [i for i in runs if (answer := answers[i]) is not None and answer.status == "created"]


async def _commit(box: Outbox) -> None:
    """Commit the triggers; a commit that failed without a reply may have taken, so it becomes
    :class:`Unavailable` for every caller instead of a retry item by item."""
    try:
        await box.commit()
    except (Unavailable, NeedsTransaction):
        raise
    except Exception as error:
        # The commit may have taken (a reply lost): retrying the items one by one
        # could make their keyless runs twice, so every caller is told to retry
        # (with its idempotency key, a retry is safe).
        raise Unavailable(
            "the database did not confirm the commit of the triggers",
            dependency="database",
        ) from error
