"""Task runs: creation, versioned writes, and the conditional updates that make claims and
lease renewals safe under any number of concurrent workers."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, case, func, literal, or_, select, tuple_, update
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from scheduler_application.errors import Conflict
from scheduler_application.ports.repositories import Page, QueueActivity, RunFilter
from scheduler_domain.run import TaskRun
from scheduler_domain.status import ACTIVE_STATUSES, RunStatus
from scheduler_infrastructure.persistence.column_types import UTCDateTime
from scheduler_infrastructure.persistence.cursors import (
    decode_cursor,
    decode_instant,
    encode_cursor,
)
from scheduler_infrastructure.persistence.mappers import run_from_row, run_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.tables import (
    RUN_DEPENDENTS_UNRESOLVED,
    RUN_PENDING,
    RUN_QUEUED,
    RUN_RUNNING,
    task_dependencies,
    task_runs,
)

_c = task_runs.c


class SqlRunRepository(SqlRepository):
    what = "run"

    async def add(self, run: TaskRun) -> None:
        await self._insert_new(task_runs, run_to_row(run))

    async def get(self, run_id: str) -> TaskRun | None:
        return await self._one(select(task_runs).where(_c.id == run_id))

    async def get_by_idempotency_key(self, task_id: str, key: str) -> TaskRun | None:
        return await self._one(
            select(task_runs).where(_c.task_id == task_id, _c.idempotency_key == key)
        )

    async def update(self, run: TaskRun, *, expected_version: int) -> None:
        row = run_to_row(run)
        del row["id"]
        result = await self._execute(
            update(task_runs).where(_c.id == run.id, _c.version == expected_version).values(**row)
        )
        if result.rowcount == 0:
            current = await self._scalar(select(_c.version).where(_c.id == run.id))
            if current is None:
                raise Conflict(f"run {run.id} no longer exists")
            raise Conflict(
                f"run {run.id} is at version {current}, not {expected_version}", field="version"
            )

    async def claim(
        self, run_id: str, *, worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        return await self._claim_where(_c.id == run_id, worker_id=worker_id, now=now, lease=lease)

    async def claim_next(
        self, *, queues: Sequence[str], worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        if not queues:
            return None
        pick = (
            select(_c.id)
            .where(RUN_QUEUED, _c.queue.in_(list(queues)))
            .order_by(_c.priority.desc(), _c.created_at, _c.id)
            .limit(1)
        )
        chosen = self._locked(pick).scalar_subquery()
        return await self._claim_where(_c.id == chosen, worker_id=worker_id, now=now, lease=lease)

    async def _claim_where(
        self, which: ColumnElement[bool], *, worker_id: str, now: datetime, lease: timedelta
    ) -> TaskRun | None:
        """One ``UPDATE … WHERE status = 'queued' … RETURNING``: of racing claimers exactly one
        matches the row; the others see it running and get None."""
        statement = (
            update(task_runs)
            .where(which, RUN_QUEUED)
            .values(
                status=RunStatus.RUNNING.value,
                worker_id=worker_id,
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=now + lease,
                version=_c.version + 1,
            )
            .returning(*task_runs.c)
        )
        row = (await self._execute(statement)).mappings().first()
        return None if row is None else run_from_row(row)

    async def renew_lease(
        self, run_id: str, *, token: int, now: datetime, lease: timedelta
    ) -> bool:
        result = await self._execute(
            update(task_runs)
            .where(_c.id == run_id, RUN_RUNNING, _c.version == token)
            .values(heartbeat_at=now, lease_expires_at=now + lease)
        )
        return result.rowcount == 1

    async def list(
        self, run_filter: RunFilter, *, limit: int, cursor: str | None = None
    ) -> Page[TaskRun]:
        """Newest first, by ``(created_at, id)``."""
        check_limit(limit)
        query = select(task_runs).where(*_conditions(run_filter))
        if cursor is not None:
            created, run_id = decode_cursor(cursor, 2)
            boundary = tuple_(
                literal(decode_instant(created), UTCDateTime()), literal(run_id, String())
            )
            query = query.where(tuple_(_c.created_at, _c.id) < boundary)
        query = query.order_by(_c.created_at.desc(), _c.id.desc()).limit(limit + 1)
        items = await self._many(query)
        if len(items) <= limit:
            return Page(items)
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].created_at, items[-1].id))

    async def active_for_task(self, task_id: str) -> builtins.list[TaskRun]:
        active = [status.value for status in ACTIVE_STATUSES]
        return await self._many(
            select(task_runs)
            .where(_c.task_id == task_id, _c.status.in_(active))
            .order_by(_c.created_at, _c.id)
        )

    async def for_logical_time(
        self, task_ids: Sequence[str], scheduled_for: datetime
    ) -> builtins.list[TaskRun]:
        if not task_ids:
            return []
        return await self._many(
            select(task_runs)
            .where(_c.task_id.in_(list(task_ids)), _c.scheduled_for == scheduled_for)
            .order_by(_c.task_id, _c.attempt)
        )

    async def pending_due(self, now: datetime, *, limit: int) -> builtins.list[TaskRun]:
        """Pending runs whose ``not_before`` has passed, or that have none (never published)."""
        check_limit(limit)
        query = (
            select(task_runs)
            .where(RUN_PENDING, or_(_c.not_before.is_(None), _c.not_before <= now))
            .order_by(func.coalesce(_c.not_before, _c.created_at), _c.priority.desc(), _c.id)
            .limit(limit)
        )
        return await self._many(self._locked(query))

    async def expired_leases(self, now: datetime, *, limit: int) -> builtins.list[TaskRun]:
        check_limit(limit)
        query = (
            select(task_runs)
            .where(RUN_RUNNING, _c.lease_expires_at <= now)
            .order_by(_c.lease_expires_at, _c.id)
            .limit(limit)
        )
        return await self._many(self._locked(query))

    async def stale_queued(self, queued_before: datetime, *, limit: int) -> builtins.list[TaskRun]:
        check_limit(limit)
        return await self._many(
            select(task_runs)
            .where(RUN_QUEUED, _c.queued_at < queued_before)
            .order_by(_c.queued_at, _c.id)
            .limit(limit)
        )

    async def running_on_worker(self, worker_id: str) -> builtins.list[TaskRun]:
        return await self._many(
            select(task_runs).where(RUN_RUNNING, _c.worker_id == worker_id).order_by(_c.id)
        )

    async def count_by_status(self) -> dict[RunStatus, int]:
        """Statuses with at least one run (absent means zero)."""
        rows = await self._all(select(_c.status, func.count().label("n")).group_by(_c.status))
        return {RunStatus(row["status"]): int(row["n"]) for row in rows}

    async def queue_activity(self, since: datetime) -> builtins.list[QueueActivity]:
        """Two grouped counts: live runs by status (served by the partial status indexes) and
        runs created or finished since ``since`` (``finished_at`` has no index of its own)."""
        tallies: dict[str, dict[str, int]] = {}
        active = [status.value for status in ACTIVE_STATUSES]
        live = await self._all(
            select(_c.queue, _c.status, func.count().label("n"))
            .where(_c.status.in_(active))
            .group_by(_c.queue, _c.status)
        )
        for row in live:
            tally = tallies.setdefault(row["queue"], {})
            tally[row["status"]] = int(row["n"])
        recent = await self._all(
            select(
                _c.queue,
                func.sum(case((_c.created_at >= since, 1), else_=0), type_=Integer).label("c"),
                func.sum(case((_c.finished_at >= since, 1), else_=0), type_=Integer).label("f"),
            )
            .where(or_(_c.created_at >= since, _c.finished_at >= since))
            .group_by(_c.queue)
        )
        for row in recent:
            tally = tallies.setdefault(row["queue"], {})
            tally["created"] = int(row["c"] or 0)
            tally["finished"] = int(row["f"] or 0)
        return [QueueActivity(queue=queue, **tallies[queue]) for queue in sorted(tallies)]

    async def count_in_flight(self, task_ids: Sequence[str]) -> dict[str, int]:
        if not task_ids:
            return {}
        rows = await self._all(
            select(_c.task_id, func.count().label("n"))
            .where(
                _c.task_id.in_(sorted(set(task_ids))),
                _c.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value]),
            )
            .group_by(_c.task_id)
        )
        return {row["task_id"]: int(row["n"]) for row in rows}

    async def pending_due_excluding(
        self, now: datetime, *, limit: int, exclude_task_ids: Sequence[str]
    ) -> builtins.list[TaskRun]:
        check_limit(limit)
        query = self._pending_query(now).limit(limit)
        if exclude_task_ids:
            query = query.where(_c.task_id.not_in(sorted(set(exclude_task_ids))))
        return await self._many(self._locked(query))

    async def pending_among(
        self, run_ids: Sequence[str], now: datetime
    ) -> builtins.list[TaskRun]:
        if not run_ids:
            return []
        query = self._pending_query(now).where(_c.id.in_(sorted(set(run_ids))))
        return await self._many(self._locked(query))

    def _pending_query(self, now: datetime) -> Select[Any]:
        """The WHERE and ORDER BY of :meth:`pending_due` (the pending index's predicate)."""
        return (
            select(task_runs)
            .where(RUN_PENDING, or_(_c.not_before.is_(None), _c.not_before <= now))
            .order_by(func.coalesce(_c.not_before, _c.created_at), _c.priority.desc(), _c.id)
        )

    async def queued_in(self, queues: Sequence[str], *, limit: int) -> builtins.list[TaskRun]:
        check_limit(limit)
        if not queues:
            return []
        query = (
            select(task_runs)
            .where(RUN_QUEUED, _c.queue.in_(sorted(set(queues))))
            .order_by(_c.queued_at, _c.id)
            .limit(limit)
        )
        return await self._many(self._locked(query))

    async def finished_upstream_runs(
        self, *, since: datetime, limit: int
    ) -> builtins.list[TaskRun]:
        """Two steps, so the planner walks the partial index per upstream task rather than
        every unresolved terminal run: the (few) upstream ids first, then their runs."""
        check_limit(limit)
        upstreams = await self._all(select(task_dependencies.c.upstream_id).distinct())
        if not upstreams:
            return []
        query = (
            select(task_runs)
            .where(
                RUN_DEPENDENTS_UNRESOLVED,
                _c.task_id.in_(sorted(row["upstream_id"] for row in upstreams)),
                _c.finished_at >= since,
            )
            .order_by(_c.finished_at, _c.id)
            .limit(limit)
        )
        return await self._many(self._locked(query))

    async def mark_dependents_resolved(self, run_ids: Sequence[str], *, at: datetime) -> None:
        if not run_ids:
            return
        await self._execute(
            update(task_runs)
            .where(_c.id.in_(sorted(set(run_ids))))
            .values(dependents_resolved_at=at)
        )

    async def _one(self, query: Select[Any]) -> TaskRun | None:
        row = await self._first(query)
        return None if row is None else run_from_row(row)

    async def _many(self, query: Select[Any]) -> builtins.list[TaskRun]:
        return [run_from_row(row) for row in await self._all(query)]


def _conditions(run_filter: RunFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if run_filter.owner_id is not None:
        conditions.append(_c.owner_id == run_filter.owner_id)
    if run_filter.task_id is not None:
        conditions.append(_c.task_id == run_filter.task_id)
    if run_filter.statuses:
        conditions.append(_c.status.in_(sorted(s.value for s in run_filter.statuses)))
    if run_filter.trigger is not None:
        conditions.append(_c.trigger == run_filter.trigger.value)
    if run_filter.worker_id is not None:
        conditions.append(_c.worker_id == run_filter.worker_id)
    if run_filter.created_after is not None:
        conditions.append(_c.created_at >= run_filter.created_after)
    if run_filter.created_before is not None:
        conditions.append(_c.created_at < run_filter.created_before)
    return conditions
