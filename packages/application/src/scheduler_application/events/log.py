"""The event log: what consumers outside read (SSE today; a webhook dispatcher and a broker
publisher later, each with the same cursor — docs/events.md).

Run transitions are written by the use cases that make them (``uow.events.add``). This module
adds the rest, in the transaction of the change: task changes (:func:`task_event`), skipped
slots (:func:`add_decisions`), and anything else through :func:`record_event` or
:meth:`EventService.record` (``queue.paused`` and its kin). Reading applies the object-level
rule of every other list: a caller whose role does not see every team's tasks reads only the
events of its teams' tasks and the records it owns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from scheduler_application.accounts.access import Principal, can_see, team_scope
from scheduler_application.errors import NotFound
from scheduler_application.paging import page_limit
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.repositories import EventQuery
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.events import (
    TASK_SLOT_SKIPPED,
    EventCursor,
    EventRecord,
    LoggedEvent,
    SlotDecision,
    SlotOutcome,
    check_kind,
)
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task

#: The dispatcher's own decisions (skipped slots) are recorded as this actor.
DISPATCHER_ACTOR = "system:dispatcher"


async def record_event(
    uow: UnitOfWork,
    kind: str,
    *,
    at: datetime,
    actor: str,
    subject: str | None = None,
    task_id: str | None = None,
    owner_id: str | None = None,
    team_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> EventRecord:
    """Append one entry in ``uow``'s transaction (committed, or not, with the change it tells
    of). ``kind`` is ``<area>.<what happened>`` (``queue.paused``)."""
    record = EventRecord(
        kind=kind,
        at=at,
        actor=actor,
        subject=subject,
        task_id=task_id,
        owner_id=owner_id,
        team_id=team_id,
        detail=dict(detail or {}),
    )
    await uow.events.record(record)
    return record


async def task_event(
    uow: UnitOfWork,
    kind: str,
    task: Task,
    *,
    at: datetime,
    actor: str,
    detail: dict[str, Any] | None = None,
) -> EventRecord:
    """A task change (``task.created`` …), readable by the task's team even once the task is
    gone."""
    record = task_record(kind, task, at=at, actor=actor, detail=detail)
    await uow.events.record(record)
    return record


def task_record(
    kind: str,
    task: Task,
    *,
    at: datetime,
    actor: str,
    detail: dict[str, Any] | None = None,
) -> EventRecord:
    """The entry :func:`task_event` appends, for a caller that appends many at once
    (``uow.events.record_many``)."""
    return EventRecord(
        kind=kind,
        at=at,
        actor=actor,
        subject=f"task:{task.name}",
        task_id=task.id,
        team_id=task.team_id,
        detail={"version": task.version, **(detail or {})},
    )


async def add_decisions(
    uow: UnitOfWork,
    decisions: Sequence[SlotDecision],
    *,
    tasks: Iterable[Task] = (),
    actor: str = DISPATCHER_ACTOR,
) -> None:
    """Store slot decisions; every skipped one is also a ``task.slot_skipped`` event with its
    reason, of its task's team when ``tasks`` names it (so the team still reads it once the
    task is deleted)."""
    teams = {task.id: task.team_id for task in tasks}
    if not decisions:
        return
    if len(decisions) == 1:
        await uow.decisions.add(decisions[0])
    else:
        await uow.decisions.add_many(decisions)
    for decision in decisions:
        if decision.outcome is not SlotOutcome.SKIPPED:
            continue
        await record_event(
            uow,
            TASK_SLOT_SKIPPED,
            at=decision.at,
            actor=actor,
            task_id=decision.task_id,
            team_id=teams.get(decision.task_id),
            detail={
                "slot": decision.slot.isoformat(),
                "reason": None if decision.reason is None else decision.reason.value,
                **decision.detail,
            },
        )


class FilterArgs(TypedDict):
    task_id: str | None
    run_id: str | None
    statuses: tuple[RunStatus, ...]
    kinds: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilters:
    """What a follower asked for, passed on as the keyword arguments of :meth:`EventService.read`
    and :func:`~scheduler_application.event_stream.follow`."""

    task_id: str | None = None
    run_id: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    kinds: tuple[str, ...] = ()

    def as_query(self) -> FilterArgs:
        return FilterArgs(
            task_id=self.task_id, run_id=self.run_id, statuses=self.statuses, kinds=self.kinds
        )


class EventService:
    """Read the log as a caller may see it; record events outside any other change; prune."""

    def __init__(self, *, uow_factory: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow_factory = uow_factory
        self._clock = clock

    async def read(
        self,
        *,
        principal: Principal,
        after: EventCursor,
        task_id: str | None = None,
        run_id: str | None = None,
        statuses: Sequence[RunStatus] = (),
        kinds: Sequence[str] = (),
        limit: int = 100,
    ) -> list[LoggedEvent]:
        """Entries after ``after`` in cursor order. A task or run the caller may not see is
        NotFound, as everywhere else; without those filters, someone else's events are simply
        not there."""
        scope = team_scope(principal)
        for kind in kinds:
            check_kind(kind)
        query = EventQuery(
            after=after,
            team_ids=scope,
            owner_id=principal.subject_id,
            task_id=task_id,
            run_id=run_id,
            statuses=tuple(statuses),
            kinds=tuple(kinds),
        )
        async with self._uow_factory() as uow:
            await self._check_visible(uow, principal, task_id=task_id, run_id=run_id)
            return await uow.events.read_log(query, limit=page_limit(limit))

    async def head(self, *, principal: Principal) -> EventCursor:
        """Where "from now on" starts."""
        team_scope(principal)
        async with self._uow_factory() as uow:
            return await uow.events.log_head()

    async def record(
        self,
        kind: str,
        *,
        actor: str,
        subject: str | None = None,
        detail: dict[str, Any] | None = None,
        task_id: str | None = None,
        owner_id: str | None = None,
    ) -> EventRecord:
        """Record an event in a transaction of its own (prefer :func:`record_event` inside the
        change's own unit of work, so the event exists exactly when the change does)."""
        async with self._uow_factory() as uow:
            record = await record_event(
                uow,
                kind,
                at=self._clock.now(),
                actor=actor,
                subject=subject,
                task_id=task_id,
                owner_id=owner_id,
                detail=detail,
            )
            await uow.commit()
        return record

    async def prune(self, *, older_than: timedelta, batch: int = 1000) -> int:
        """Delete the entries older than ``older_than``, ``batch`` at a time, each batch its own
        transaction (so no lock is held long); how many went."""
        before = self._clock.now() - older_than
        total = 0
        while True:
            async with self._uow_factory() as uow:
                deleted = await uow.events.prune(before=before, limit=batch)
                await uow.commit()
            total += deleted
            if deleted < batch:
                return total

    @staticmethod
    async def _check_visible(
        uow: UnitOfWork, principal: Principal, *, task_id: str | None, run_id: str | None
    ) -> None:
        if principal.role.sees_all_tasks:
            return
        if task_id is not None:
            task = await uow.tasks.get(task_id)
            if task is None or not can_see(principal, task.team_id):
                raise NotFound(f"task {task_id} not found", field="task_id")
        if run_id is not None:
            run = await uow.runs.get(run_id)
            if run is None or not can_see(principal, run.team_id):
                raise NotFound(f"run {run_id} not found", field="run_id")
