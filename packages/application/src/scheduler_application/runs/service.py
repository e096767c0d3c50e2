"""Run use cases for clients: trigger (idempotently), inspect, cancel and retry runs."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler_application.accounts.access import (
    Principal,
    can_change,
    can_see,
    ensure_can_read_tasks,
    ensure_can_write_tasks,
    ensure_changeable,
    team_scope,
)
from scheduler_application.dispatch.outbox import Outbox
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.errors import AlreadyExists, Conflict, NotFound
from scheduler_application.paging import DEFAULT_PAGE_SIZE, page_limit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.repositories import Page, RunFilter
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import (
    ReadUnitOfWorkFactory,
    UnitOfWork,
    UnitOfWorkFactory,
)
from scheduler_application.tasks.service import load_changeable_task, load_visible_task
from scheduler_application.templates.subscriptions import run_params
from scheduler_domain.errors import ValidationError
from scheduler_domain.events import RunEvent
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import format_instant
from scheduler_domain.status import FAILURE_STATUSES, RunStatus
from scheduler_domain.task import Task

MAX_IDEMPOTENCY_KEY = 200
#: The most tasks :meth:`RunService.latest_statuses` looks at once (a page of tasks is fewer).
MAX_GLANCE_TASKS = 200
#: Client keys are namespaced so they never meet the keys the system gives retries and slots.
MANUAL_KEY_PREFIX = "manual:"
#: Final runs a user may try again by hand.
RETRYABLE_STATUSES = FAILURE_STATUSES | {RunStatus.DEAD_LETTERED, RunStatus.CANCELLED}
_TICK = timedelta(microseconds=1)


async def load_visible_run(uow: UnitOfWork, run_id: str, principal: Principal) -> TaskRun:
    """The run, or NotFound when it does not exist *or* the caller may not see it."""
    run = await uow.runs.get(run_id)
    if run is None or not can_see(principal, run.team_id):
        raise NotFound(f"run {run_id} not found", field="run_id")
    return run


async def load_changeable_run(uow: UnitOfWork, run_id: str, principal: Principal) -> TaskRun:
    """The run, NotFound as :func:`load_visible_run`, PermissionDenied when the caller only
    views its team."""
    run = await load_visible_run(uow, run_id, principal)
    ensure_changeable(principal, run.team_id, kind="run", object_id=run_id)
    return run


class RunService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        relay: RunRelay,
        observer: RunObserver = NO_OBSERVER,
        tracer: Tracer = NO_TRACER,
        read_uow_factory: ReadUnitOfWorkFactory | None = None,
    ) -> None:
        """Triggered and retried runs pass the ``relay``'s gates in the transaction that
        creates them and are published right after it (or within it, on a queue kept in the
        database); a run a gate holds is left ``pending`` for the dispatcher's relay loop."""
        self._uow_factory = uow_factory
        #: ``get`` and ``list`` read here (default: ``uow_factory``).
        self._reads = read_uow_factory or uow_factory
        self._clock = clock
        self._observer = observer
        self._relay = relay
        self._tracer = tracer

    async def trigger(
        self,
        task_id: str,
        *,
        principal: Principal,
        idempotency_key: str | None = None,
        logical_time: datetime | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TaskRun:
        """A manual run, queued and published at once when the task's gates allow it
        (pending for the relay loop otherwise).

        Its logical time (``scheduled_for``) is now, or ``logical_time``: an aware instant not
        in the future, for which the task has no run yet (Conflict otherwise). Dependents meet
        their upstreams on it, so a hand-started upstream can complete a fan-in, as if its
        schedule had fired then.

        The same ``idempotency_key`` always answers with the same run, also when two callers race
        (the loser's insert hits the unique key, and it re-reads the winner's run).

        ``params`` are run parameters, merged over the task's and validated — against the
        template's schema for a subscription, by the executor's own check otherwise
        (ValidationError naming ``params.<name>``); the run keeps them and what they made.
        """
        ensure_can_write_tasks(principal)
        key = stored_key(idempotency_key)
        try:
            # The run's trace is the caller's (the API request's): created, published, then
            # consumed and executed by a worker under the traceparent stored on the run.
            with self._tracer.span("run.trigger", attributes={"scheduler.task_id": task_id}):
                return await self._trigger(task_id, principal, key, logical_time, params)
        except AlreadyExists:
            if key is None:
                raise
            async with self._uow_factory() as uow:
                task = await load_visible_task(uow, task_id, principal)
                existing = await uow.runs.get_by_idempotency_key(task.id, key)
            if existing is None:
                raise
            return existing

    async def _trigger(
        self,
        task_id: str,
        principal: Principal,
        key: str | None,
        logical_time: datetime | None,
        params: Mapping[str, Any] | None = None,
    ) -> TaskRun:
        now = self._clock.now()
        scheduled_for = now if logical_time is None else logical_time_of(logical_time, now=now)
        async with self._relay.outbox(self._uow_factory()) as box:
            uow = box.uow
            task = await load_changeable_task(uow, task_id, principal)
            if key is not None:
                existing = await uow.runs.get_by_idempotency_key(task.id, key)
                if existing is not None:
                    return existing
            if logical_time is not None and await uow.runs.for_logical_time(
                [task.id], scheduled_for
            ):
                raise Conflict(
                    f"task {task.name!r} already has a run for logical time "
                    f"{format_instant(scheduled_for)}",
                    field="logical_time",
                )
            given = await run_params(uow, task, params)
            run = given.apply(
                TaskRun.create(
                    task,
                    trigger=RunTrigger.MANUAL,
                    logical_time=scheduled_for,
                    now=now,
                    idempotency_key=key,
                    traceparent=self._tracer.current_traceparent(),
                )
            )
            run = await self._add(box, run, task=task, actor=principal.actor)
            await box.commit()
        self._observer.run_created(RunTrigger.MANUAL.value)
        return run

    async def get(self, run_id: str, *, principal: Principal) -> TaskRun:
        ensure_can_read_tasks(principal)
        async with self._reads() as uow:
            return await load_visible_run(uow, run_id, principal)

    async def list(
        self,
        *,
        principal: Principal,
        task_id: str | None = None,
        statuses: Iterable[RunStatus] = (),
        trigger: RunTrigger | None = None,
        worker_id: str | None = None,
        queue: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> Page[TaskRun]:
        """Newest first; only the runs of the caller's teams unless its role sees all."""
        scope = team_scope(principal)
        run_filter = RunFilter(
            team_ids=scope,
            task_id=task_id,
            statuses=frozenset(statuses),
            trigger=trigger,
            worker_id=worker_id,
            queue=queue,
            created_after=created_after,
            created_before=created_before,
        )
        async with self._reads() as uow:
            if task_id is not None:
                await load_visible_task(uow, task_id, principal)
            return await uow.runs.list(run_filter, limit=page_limit(limit), cursor=cursor)

    async def latest_statuses(
        self, task_ids: Sequence[str], *, principal: Principal, per_task: int = 5
    ) -> dict[str, builtins.list[tuple[str, RunStatus]]]:
        """The newest runs' statuses of each of ``task_ids`` the caller may see (the others
        are left out): a task list's "last outcomes at a glance"."""
        ensure_can_read_tasks(principal)
        wanted = list(dict.fromkeys(task_ids))[:MAX_GLANCE_TASKS]
        if not wanted:
            return {}
        async with self._uow_factory() as uow:
            tasks = await uow.tasks.get_many(wanted)
            visible = [t.id for t in tasks if can_see(principal, t.team_id)]
            return await uow.runs.latest_statuses(visible, per_task=max(1, min(per_task, 20)))

    async def cancel(
        self, run_id: str, *, principal: Principal, reason: str = "cancelled by user"
    ) -> TaskRun:
        """Pending, queued or running → cancelled. A running attempt's worker learns it on its
        next heartbeat (its fencing token is stale from now on) and stops."""
        ensure_can_write_tasks(principal)
        now = self._clock.now()
        async with self._uow_factory() as uow:
            run = await load_changeable_run(uow, run_id, principal)
            if run.status.is_final:
                raise Conflict(
                    f"run {run_id} is already {run.status.value} and cannot be cancelled",
                    field="status",
                )
            read_version = run.version
            event = run.cancel(now=now, actor=principal.actor, reason=reason[:500])
            await uow.runs.update(run, expected_version=read_version)
            await uow.events.add(event)
            await uow.commit()
        self._observer.run_finished(status=RunStatus.CANCELLED.value)
        return run

    async def cancel_many(
        self, run_ids: Sequence[str], *, principal: Principal, reason: str = "cancelled by user"
    ) -> dict[str, str]:
        """:meth:`cancel` for many runs in one transaction: each id's outcome — ``cancelled``,
        ``final:<status>`` for a run already final (left as it is), or ``not_found`` (also for a
        run the caller may not see). When a run changes under it (a worker finishing it meanwhile),
        nothing of this batch is written and each run is cancelled on its own instead."""
        ensure_can_write_tasks(principal)
        now = self._clock.now()
        outcomes: dict[str, str] = {}
        async with self._uow_factory() as uow:
            found = {r.id: r for r in await uow.runs.get_many(list(run_ids))}
            writes: list[tuple[TaskRun, int]] = []
            events: list[RunEvent] = []
            for run_id in run_ids:
                run = found.get(run_id)
                if run is None or not can_see(principal, run.team_id):
                    outcomes[run_id] = "not_found"
                elif not can_change(principal, run.team_id):
                    outcomes[run_id] = "forbidden"
                elif run.status.is_final:
                    outcomes[run_id] = f"final:{run.status.value}"
                else:
                    read_version = run.version
                    events.append(run.cancel(now=now, actor=principal.actor, reason=reason[:500]))
                    writes.append((run, read_version))
                    outcomes[run_id] = "cancelled"
            try:
                if writes:
                    await uow.runs.update_many(writes)
                    await uow.events.add_many(events)
                    await uow.commit()
            except Conflict:
                await uow.rollback()
                writes = []
        if not writes and "cancelled" in outcomes.values():
            return await self._cancel_each(outcomes, principal=principal, reason=reason)
        for _ in writes:
            self._observer.run_finished(status=RunStatus.CANCELLED.value)
        return outcomes

    async def _cancel_each(
        self, outcomes: dict[str, str], *, principal: Principal, reason: str
    ) -> dict[str, str]:
        for run_id, outcome in outcomes.items():
            if outcome != "cancelled":
                continue
            try:
                await self.cancel(run_id, principal=principal, reason=reason)
            except Conflict:
                run = await self.get(run_id, principal=principal)
                outcomes[run_id] = f"final:{run.status.value}"
            except NotFound:
                outcomes[run_id] = "not_found"
        return outcomes

    async def retry(self, run_id: str, *, principal: Principal) -> TaskRun:
        """A new pending attempt of a final, unsuccessful run (failed, timed out, lost, dead
        lettered or cancelled), for the same logical time, published at once."""
        ensure_can_write_tasks(principal)
        now = self._clock.now()
        async with self._relay.outbox(self._uow_factory()) as box:
            uow = box.uow
            run = await load_changeable_run(uow, run_id, principal)
            if run.status not in RETRYABLE_STATUSES:
                raise Conflict(
                    f"run {run_id} is {run.status.value}; only a failed, timed out, lost, "
                    "dead-lettered or cancelled run can be retried",
                    field="status",
                )
            task = await uow.tasks.get(run.task_id)
            siblings = await uow.runs.for_logical_time([run.task_id], run.scheduled_for)
            retry = run.new_attempt(
                attempt=max((r.attempt for r in siblings), default=run.attempt) + 1,
                now=now,
                task=task,
            )
            try:
                retry = await self._add(
                    box, retry, task=task, actor=principal.actor, free_slot=False
                )
                await box.commit()
            except AlreadyExists:
                raise Conflict(
                    f"run {run_id} was retried concurrently; try again", field="run_id"
                ) from None
        self._observer.run_created(RunTrigger.RETRY.value)
        return retry

    async def _add(
        self, box: Outbox, run: TaskRun, *, task: Task | None, actor: str, free_slot: bool = True
    ) -> TaskRun:
        """Add the new run as the relay's gates let it go (queued at once, or pending), with
        its creation event and then the gates' events; the run as written. Its message is
        staged or published by the outbox's commit. A failed publish after the commit is
        retried by the relay in the background, and failing that its run is published again
        once it counts as stale: the run is accepted whatever happens there."""
        created = run.created_event(actor=actor)
        admitted = await box.admit([run], tasks=() if task is None else (task,))
        [run] = admitted.runs
        events = [created, *admitted.events]
        if free_slot:
            await _add_at_free_slot(uow=box.uow, run=run, events=events)
        else:
            await box.uow.runs.add(run, events=events)
        return run

    async def events(self, run_id: str, *, principal: Principal) -> builtins.list[RunEvent]:
        """The run's audit trail, oldest first."""
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            run = await load_visible_run(uow, run_id, principal)
            return await uow.events.list_for_run(run.id)


def logical_time_of(value: datetime, *, now: datetime) -> datetime:
    """A manual run's chosen logical time: aware (never guessed) and not in the future."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            "logical_time needs a time zone offset (e.g. Z)", field="logical_time"
        )
    try:
        instant = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError("logical_time is out of range", field="logical_time") from None
    if instant > now:
        raise ValidationError(
            f"logical_time {format_instant(instant)} is in the future; a manual run is for now "
            "or an earlier logical time",
            field="logical_time",
        )
    return instant


def stored_key(idempotency_key: str | None) -> str | None:
    if idempotency_key is None:
        return None
    if (
        not isinstance(idempotency_key, str)
        or not idempotency_key.strip()
        or len(idempotency_key) > MAX_IDEMPOTENCY_KEY
        or not idempotency_key.isprintable()
    ):
        raise ValidationError(
            f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
            field="idempotency_key",
        )
    return MANUAL_KEY_PREFIX + idempotency_key


async def _add_at_free_slot(uow: UnitOfWork, run: TaskRun, events: list[RunEvent]) -> None:
    """Add ``run`` (with its first ``events``) at its ``scheduled_for``, or at the next
    microsecond not yet used as a logical time of its task: two triggers within one clock tick
    must not collide on ``(task_id, scheduled_for, attempt)``. Every logical time in use has its
    first attempt, so the insert itself finds a taken one (no read first: one round trip in the
    common case)."""
    while True:
        try:
            await uow.runs.add(run, events=events)
            return
        except AlreadyExists as clash:
            if clash.field != "scheduled_for":
                raise
            run.scheduled_for += _TICK
