"""Task runs: creation, versioned writes, and the conditional updates that make claims and
lease renewals safe under any number of concurrent workers."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    Integer,
    String,
    any_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import (
    column as result_column,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import Executable, Select
from sqlalchemy.sql.elements import ColumnElement, TextClause

from scheduler_application.errors import Conflict
from scheduler_application.ports.repositories import (
    Page,
    PurgeBatch,
    PurgeKey,
    QueueActivity,
    RunFilter,
)
from scheduler_domain.accounts import Role
from scheduler_domain.events import RunEvent
from scheduler_domain.ids import new_id
from scheduler_domain.run import TaskRun, claim_changes, claim_event_fields
from scheduler_domain.status import ACTIVE_STATUSES, RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.column_types import UTCDateTime, json_text
from scheduler_infrastructure.persistence.cursors import (
    decode_cursor,
    decode_instant,
    encode_cursor,
)
from scheduler_infrastructure.persistence.mappers import run_from_row, run_to_row, task_from_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.repositories.events import (
    INSERT_FROM_ARRAYS,
    SqlRunEventRepository,
    event_columns,
)
from scheduler_infrastructure.persistence.repositories.tasks import SqlTaskRepository
from scheduler_infrastructure.persistence.repositories.users import SqlUserRepository
from scheduler_infrastructure.persistence.retention_queries import deletable_runs, finished_window
from scheduler_infrastructure.persistence.tables import (
    RUN_DEPENDENTS_UNRESOLVED,
    RUN_FINISHED,
    RUN_PENDING,
    RUN_QUEUED,
    RUN_QUEUED_NOT_BEFORE,
    RUN_RUNNING,
    run_events,
    run_tallies,
    task_dependencies,
    task_runs,
    tasks,
)

_c = task_runs.c


@cache
def _insert_new_runs(*, postgres: bool) -> Executable:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id``, built once (the rows come as
    parameters; SQLAlchemy batches them as multi-row VALUES and collects the ids)."""
    dialect = postgresql if postgres else sqlite
    statement: Executable = dialect.insert(task_runs).on_conflict_do_nothing().returning(_c.id)
    return statement


@dataclass(frozen=True, slots=True)
class AlongsideInsert:
    """More writes in the statement of :meth:`SqlRunRepository.add_new_many` (PostgreSQL), so
    that they commit exactly when the runs do, without a round trip of their own: ``ctes``,
    data-modifying common table expressions appended to the insert's (``new_run`` names the
    runs inserted: rows of theirs must be guarded by it), and ``column``, an expression the
    final ``SELECT`` evaluates once, when a run was inserted (a ``pg_notify`` of what the
    CTEs wrote, say: a CTE that is only a ``SELECT`` would not run). ``params``: their values,
    under names the runs' insert does not use. Both texts are fixed by the caller (no outside
    input): each pair is one prepared statement."""

    ctes: str
    column: str
    params: Mapping[str, Any] = field(default_factory=dict)


class SqlRunRepository(SqlRepository):
    what = "run"

    async def add(self, run: TaskRun, *, events: Sequence[RunEvent] = ()) -> None:
        """With events: :meth:`add_new_many` of this one run (one statement on PostgreSQL),
        a taken key found afterwards and named."""
        if not events:
            await self._insert_new(task_runs, run_to_row(run))
        elif run.id not in await self.add_new_many([run], events=events):
            raise await self._clash(task_runs, run_to_row(run))

    async def add_new_many(
        self,
        runs: Sequence[TaskRun],
        *,
        events: Sequence[RunEvent] = (),
        alongside: AlongsideInsert | None = None,
    ) -> set[str]:
        """PostgreSQL: one statement for the runs and their events — the runs from one array
        per column (``INSERT … SELECT FROM unnest … ON CONFLICT DO NOTHING RETURNING id``),
        the events of those inserted likewise — whose text does not depend on the number of
        rows, so it is prepared once per connection whatever the batch; ``alongside``: more
        writes in that statement (the postgres queue's messages of the runs inserted). SQLite:
        an ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` per batch, then the events
        (``alongside`` is for PostgreSQL only)."""
        if not runs:
            return set()
        if self._postgres:
            params = {**_column_arrays(runs, _WRITTEN), **event_columns(events)}
            params["id"] = [run.id for run in runs]
            prebuilt = _ADD_NEW_MANY
            if alongside is not None:
                prebuilt = _add_new_many_with(alongside.ctes, alongside.column)
                params.update(alongside.params)
            return {row[0] for row in await self._fetch(prebuilt, params)}
        if alongside is not None:
            raise ValueError("writes alongside the runs' insert need PostgreSQL")
        statement = _insert_new_runs(postgres=False)
        result = await self._execute(statement, [run_to_row(run) for run in runs])
        inserted = {row[0] for row in result}
        kept = [event for event in events if event.run_id in inserted]
        await SqlRunEventRepository(self._connection).add_many(kept)
        return inserted

    async def get(self, run_id: str) -> TaskRun | None:
        if self._postgres:
            rows = await self._fetch(_GET, {"run_id": run_id})
            return run_from_row(rows[0]) if rows else None
        return await self._one(select(task_runs).where(_c.id == run_id))

    async def move_to_team(self, task_id: str, team_id: str) -> int:
        result = await self._execute(
            update(task_runs).where(_c.task_id == task_id).values(team_id=team_id)
        )
        return int(result.rowcount or 0)

    async def get_by_idempotency_key(self, task_id: str, key: str) -> TaskRun | None:
        return await self._one(
            select(task_runs).where(_c.task_id == task_id, _c.idempotency_key == key)
        )

    async def get_by_idempotency_keys(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], TaskRun]:
        if not keys:
            return {}
        pairs = sorted(set(keys))
        runs = await self._many(
            select(task_runs).where(tuple_(_c.task_id, _c.idempotency_key).in_(pairs))
        )
        return {(run.task_id, run.idempotency_key or ""): run for run in runs}

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
        statement = _claim(which, RUN_QUEUED, worker_id=worker_id, now=now, lease=lease)
        row = (await self._execute(statement)).mappings().first()
        return None if row is None else run_from_row(row)

    async def renew_lease(
        self, run_id: str, *, worker_id: str, token: int, now: datetime, lease: timedelta
    ) -> bool:
        result = await self._execute(
            update(task_runs)
            .where(_c.id == run_id, RUN_RUNNING, _c.version == token, _c.worker_id == worker_id)
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

    async def count(self, run_filter: RunFilter) -> int:
        result = await self._execute(
            select(func.count()).select_from(task_runs).where(*_conditions(run_filter))
        )
        return int(result.scalar_one())

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

    async def held_past_due(self, due_before: datetime, *, limit: int) -> builtins.list[TaskRun]:
        """Off ``ix_task_runs_queued_not_before``: only queued runs with a ``not_before``."""
        check_limit(limit)
        return await self._many(
            select(task_runs)
            .where(
                RUN_QUEUED_NOT_BEFORE,
                _c.not_before < due_before,
                _c.queued_at < _c.not_before,
            )
            .order_by(_c.not_before, _c.id)
            .limit(limit)
        )

    async def count_queued(self, queues: Sequence[str]) -> dict[str, int]:
        if not queues:
            return {}
        rows = await self._all(
            select(_c.queue, func.count().label("n"))
            .where(RUN_QUEUED, _c.queue.in_(sorted(set(queues))))
            .group_by(_c.queue)
        )
        return {row["queue"]: int(row["n"]) for row in rows}

    async def running_on_worker(self, worker_id: str) -> builtins.list[TaskRun]:
        return await self._many(
            select(task_runs).where(RUN_RUNNING, _c.worker_id == worker_id).order_by(_c.id)
        )

    async def count_by_status(self) -> dict[RunStatus, int]:
        """Statuses with at least one run (absent means zero), the runs the retention deleted
        included (``run_tallies``)."""
        rows = await self._all(select(_c.status, func.count().label("n")).group_by(_c.status))
        counts = {RunStatus(row["status"]): int(row["n"]) for row in rows}
        for row in await self._all(select(run_tallies)):
            status = RunStatus(row["status"])
            counts[status] = counts.get(status, 0) + int(row["count"])
        return {status: n for status, n in counts.items() if n}

    async def purge_finished(
        self,
        *,
        before: datetime,
        statuses: Collection[RunStatus],
        limit: int,
        after: PurgeKey | None = None,
    ) -> PurgeBatch:
        check_limit(limit)
        if not statuses:
            return PurgeBatch(scanned=0, last=None, deleted=0)
        window = await self._all(
            self._locked(
                finished_window(before=before, statuses=statuses, limit=limit, after=after)
            )
        )
        last = (window[-1]["finished_at"], window[-1]["id"]) if len(window) == limit else None
        if not window:
            return PurgeBatch(scanned=0, last=None, deleted=0)
        status_of = {row["id"]: RunStatus(row["status"]) for row in window}
        ids = [row["id"] for row in await self._all(deletable_runs(list(status_of)))]
        deleted: dict[RunStatus, int] = {}
        for run_id in ids:
            deleted[status_of[run_id]] = deleted.get(status_of[run_id], 0) + 1
        if ids:
            await self._execute(delete(run_events).where(run_events.c.run_id.in_(ids)))
            await self._execute(delete(task_runs).where(_c.id.in_(ids)))
            dialect = postgresql if self._postgres else sqlite
            upsert = dialect.insert(run_tallies)
            await self._execute(
                upsert.on_conflict_do_update(
                    index_elements=[run_tallies.c.status],
                    set_={"count": run_tallies.c.count + upsert.excluded.count},
                ),
                [{"status": status.value, "count": n} for status, n in deleted.items()],
            )
        return PurgeBatch(scanned=len(window), last=last, deleted=len(ids), by_status=deleted)

    async def queue_activity(self, since: datetime) -> builtins.list[QueueActivity]:
        """Grouped counts: live runs by status (served by the partial status indexes), and runs
        created and runs finished since ``since``."""
        tallies: dict[str, dict[str, int]] = {}
        oldest: dict[str, datetime] = {}
        active = [status.value for status in ACTIVE_STATUSES]
        live = await self._all(
            select(
                _c.queue,
                _c.status,
                func.count().label("n"),
                func.min(_c.queued_at).label("oldest"),
            )
            .where(_c.status.in_(active))
            .group_by(_c.queue, _c.status)
        )
        for row in live:
            tally = tallies.setdefault(row["queue"], {})
            tally[row["status"]] = int(row["n"])
            if row["status"] == RunStatus.QUEUED.value and row["oldest"] is not None:
                oldest[row["queue"]] = row["oldest"]
        # Two index-backed counts rather than one with an OR: created by ``(created_at, id)``,
        # finished by the partial ``ix_task_runs_finished`` (only final runs have a
        # ``finished_at``, so its predicate changes nothing but lets the planner use it).
        created = await self._all(
            select(_c.queue, func.count().label("n"))
            .where(_c.created_at >= since)
            .group_by(_c.queue)
        )
        finished = await self._all(
            select(_c.queue, func.count().label("n"))
            .where(RUN_FINISHED, _c.finished_at >= since)
            .group_by(_c.queue)
        )
        for key, rows in (("created", created), ("finished", finished)):
            for row in rows:
                tally = tallies.setdefault(row["queue"], {})
                tally[key] = int(row["n"])
        return [
            QueueActivity(queue=queue, oldest_queued_at=oldest.get(queue), **tallies[queue])
            for queue in sorted(tallies)
        ]

    async def latest_statuses(
        self, task_ids: Sequence[str], *, per_task: int
    ) -> dict[str, builtins.list[tuple[str, RunStatus]]]:
        """Each task's newest runs by a walk down ``ix_task_runs_task_id_created_at``: on
        PostgreSQL one statement (a lateral join over the ids), on SQLite one short query per
        task. A page of tasks costs that many index probes whatever the number of runs (a
        window over every run of the tasks would read them all)."""
        wanted = list(dict.fromkeys(task_ids))
        latest: dict[str, builtins.list[tuple[str, RunStatus]]] = {}
        if not wanted:
            return latest
        if self._postgres:
            rows = await self._all_with(_LATEST_STATUSES, {"ids": wanted, "n": per_task})
            for row in rows:
                latest.setdefault(row["task_id"], []).append((row["id"], RunStatus(row["status"])))
            return latest
        for task_id in wanted:
            found = await self._all(
                select(_c.id, _c.status)
                .where(_c.task_id == task_id)
                .order_by(_c.created_at.desc(), _c.id.desc())
                .limit(per_task)
            )
            if found:
                latest[task_id] = [(row["id"], RunStatus(row["status"])) for row in found]
        return latest

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
        self,
        now: datetime,
        *,
        limit: int,
        exclude_task_ids: Sequence[str],
        exclude_queues: Sequence[str] = (),
    ) -> builtins.list[TaskRun]:
        check_limit(limit)
        query = self._pending_query(now).limit(limit)
        if exclude_task_ids:
            query = query.where(_c.task_id.not_in(sorted(set(exclude_task_ids))))
        if exclude_queues:
            query = query.where(_c.queue.not_in(sorted(set(exclude_queues))))
        return await self._many(self._locked(query))

    async def waiting_in_queues(
        self, queues: Sequence[str], *, statuses: Sequence[RunStatus], limit: int
    ) -> builtins.list[TaskRun]:
        check_limit(limit)
        wanted = sorted(set(queues))
        if not wanted or not statuses:
            return []
        of_task_queue = select(tasks.c.id).where(tasks.c.queue.in_(wanted))
        query = (
            select(task_runs)
            .where(
                _c.status.in_(sorted({status.value for status in statuses})),
                or_(_c.queue.in_(wanted), _c.task_id.in_(of_task_queue)),
            )
            .order_by(_c.created_at, _c.id)
            .limit(limit)
        )
        return await self._many(self._locked(query))

    async def count_in_flight_by_queue(self, queues: Sequence[str]) -> dict[str, int]:
        wanted = sorted(set(queues))
        if not wanted:
            return {}
        rows = await self._all(
            select(tasks.c.queue, func.count().label("n"))
            .select_from(task_runs.join(tasks, tasks.c.id == _c.task_id))
            .where(
                tasks.c.queue.in_(wanted),
                _c.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value]),
            )
            .group_by(tasks.c.queue)
        )
        return {row["queue"]: int(row["n"]) for row in rows}

    async def pending_fair(
        self, now: datetime, *, queues: Sequence[str], limit: int
    ) -> builtins.list[TaskRun]:
        """Ranks the queues' due pending runs per fairness key with a window function, then
        locks the first ``limit`` (PostgreSQL refuses ``FOR UPDATE`` beside a window
        function); a run taken meanwhile is left out."""
        check_limit(limit)
        wanted = sorted(set(queues))
        if not wanted:
            return []
        due = func.coalesce(_c.not_before, _c.created_at)
        key = func.coalesce(tasks.c.fairness_key, tasks.c.owner_id)
        turn = (
            func.row_number()
            .over(partition_by=(_c.queue, key, _c.priority), order_by=(due, _c.id))
            .label("turn")
        )
        ranked = (
            select(_c.id, _c.priority, due.label("due"), turn)
            .select_from(task_runs.join(tasks, tasks.c.id == _c.task_id))
            .where(RUN_PENDING, or_(_c.not_before.is_(None), _c.not_before <= now))
            .where(_c.queue.in_(wanted))
            .subquery()
        )
        order = (ranked.c.priority.desc(), ranked.c.turn, ranked.c.due, ranked.c.id)
        ids = [
            row["id"] for row in await self._all(select(ranked.c.id).order_by(*order).limit(limit))
        ]
        if not ids:
            return []
        position = {run_id: index for index, run_id in enumerate(ids)}
        taken = await self.pending_among(ids, now)
        return sorted(taken, key=lambda run: position[run.id])

    async def count_in_flight_by_fair_key(
        self, queues: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        wanted = sorted(set(queues))
        if not wanted:
            return {}
        key = func.coalesce(tasks.c.fairness_key, tasks.c.owner_id).label("fair_key")
        rows = await self._all(
            select(tasks.c.queue, key, func.count().label("n"))
            .select_from(task_runs.join(tasks, tasks.c.id == _c.task_id))
            .where(
                tasks.c.queue.in_(wanted),
                _c.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value]),
            )
            .group_by(tasks.c.queue, key)
        )
        return {(row["queue"], row["fair_key"]): int(row["n"]) for row in rows}

    async def pending_among(self, run_ids: Sequence[str], now: datetime) -> builtins.list[TaskRun]:
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

    # -- batched forms of the hot path ---------------------------------------------------------

    async def claim_many(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[TaskRun]:
        """One conditional ``UPDATE … WHERE id = ANY(:ids) AND status = 'queued' RETURNING``.
        PostgreSQL locks the rows in index (id) order, so overlapping claims never deadlock; a
        claimer that waited for another's row re-checks the status and leaves it out."""
        wanted = sorted(set(run_ids))
        if not wanted:
            return []
        statement = _claim(
            self._among(wanted),
            _STILL_QUEUED if self._postgres else RUN_QUEUED,
            worker_id=worker_id,
            now=now,
            lease=lease,
        )
        rows = (await self._execute(statement)).mappings().all()
        return sorted((run_from_row(row) for row in rows), key=_by_id)

    async def start_many(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[tuple[TaskRun, Task | None]]:
        """PostgreSQL: one statement — the claim's ``UPDATE … RETURNING`` as a CTE, the claim
        events inserted from its rows in a second CTE, and the claimed rows joined with their
        tasks (and the tasks' upstreams) — where :meth:`claim_many`, a read of the tasks and
        an insert of the events took three round trips. SQLite: those three."""
        started = await self._start(run_ids, worker_id=worker_id, now=now, lease=lease)
        return [(run, task) for run, task, _ in started]

    async def start_many_owned(
        self, run_ids: Sequence[str], *, worker_id: str, now: datetime, lease: timedelta
    ) -> builtins.list[tuple[TaskRun, Task | None, Role | None]]:
        """:meth:`start_many` with each task's owner's role, read by the same statement on
        PostgreSQL (one statement, atomic on its own: a statement unit of work runs it)."""
        return await self._start(run_ids, worker_id=worker_id, now=now, lease=lease, owners=True)

    async def _start(
        self,
        run_ids: Sequence[str],
        *,
        worker_id: str,
        now: datetime,
        lease: timedelta,
        owners: bool = False,
    ) -> builtins.list[tuple[TaskRun, Task | None, Role | None]]:
        wanted = sorted(set(run_ids))
        if not wanted:
            return []
        if not self._postgres:
            claimed = await self.claim_many(wanted, worker_id=worker_id, now=now, lease=lease)
            await SqlRunEventRepository(self._connection).add_many(
                [run.claim_event() for run in claimed]
            )
            found = {
                task.id: task
                for task in await SqlTaskRepository(self._connection).get_many(
                    [run.task_id for run in claimed]
                )
            }
            roles: dict[str, Role] = {}
            if owners:
                for owner_id in sorted({task.owner_id for task in found.values()}):
                    owner = await SqlUserRepository(self._connection).get(owner_id)
                    if owner is not None:
                        roles[owner_id] = owner.role
            return [
                (run, task, roles.get(task.owner_id) if task is not None else None)
                for run in claimed
                for task in (found.get(run.task_id),)
            ]
        actor, detail = claim_event_fields(worker_id)
        changes = claim_changes(worker_id=worker_id, now=now, lease=lease)
        one = len(wanted) == 1
        if owners:
            prebuilt = _START_ONE_OWNED if one else _START_MANY_OWNED
        else:
            prebuilt = _START_ONE if one else _START_MANY
        rows = await self._fetch(
            prebuilt,
            {
                "run_ids": wanted,
                "event_ids": [new_id() for _ in wanted],
                "queued": RunStatus.QUEUED.value,
                "running": RunStatus.RUNNING.value,
                "actor": actor,
                "detail": json_text(detail),
                **{f"claim_{name}": value for name, value in changes.items()},
            },
        )
        started: list[tuple[TaskRun, Task | None, Role | None]] = []
        #: Runs of one task read its row once (one statement, one snapshot): decoded once,
        #: one ``Task`` for all of them, as the claim's callers keep one per task anyway.
        decoded: dict[str, Task] = {}
        for row in rows:
            task = None
            task_id = row["t_id"]
            if task_id is not None:
                task = decoded.get(task_id)
                if task is None:
                    task_row = {column.name: row[f"t_{column.name}"] for column in tasks.c}
                    task = decoded[task_id] = task_from_row(task_row, row["t_depends_on"] or ())
            role = row["owner_role"] if owners else None
            started.append((run_from_row(row), task, Role(role) if role is not None else None))
        return started

    async def get_many(self, run_ids: Sequence[str]) -> builtins.list[TaskRun]:
        wanted = sorted(set(run_ids))
        if not wanted:
            return []
        return await self._many(select(task_runs).where(self._among(wanted)).order_by(_c.id))

    async def update_many(
        self,
        writes: Sequence[tuple[TaskRun, int]],
        *,
        fields: Collection[str] | None = None,
        events: Sequence[RunEvent] = (),
    ) -> None:
        """PostgreSQL: one ``UPDATE … FROM unnest(<one array per column>)`` that returns the
        ids it wrote, the ``events`` inserted by a CTE of the same statement; SQLite (no
        arrays, and no network round trips to save): one by one, then the events."""
        if not writes:
            await SqlRunEventRepository(self._connection).add_many(events)
            return
        columns = _written_columns(None if fields is None else frozenset(fields))
        if not self._postgres:
            for run, expected_version in writes:
                await self._update_columns(run, expected_version, columns)
            await SqlRunEventRepository(self._connection).add_many(events)
            return
        params = _update_many_params(writes, columns, events)
        rows = await self._fetch(_update_many_statement(columns, bool(events)), params)
        written = {row[0] for row in rows}
        for run, expected_version in writes:
            if run.id not in written:
                raise Conflict(
                    f"run {run.id} is gone or no longer at version {expected_version}",
                    field="version",
                )

    async def update_each(
        self,
        writes: Sequence[tuple[TaskRun, int]],
        *,
        fields: Collection[str] | None = None,
        events: Sequence[RunEvent] = (),
    ) -> set[str]:
        """PostgreSQL: the ``UPDATE … FROM unnest(…)`` of :meth:`update_many` as a CTE, the
        events' insert guarded by the ids it wrote — one statement, atomic on its own; SQLite:
        one by one, then the events of the runs written."""
        if not writes:
            return set()
        columns = _written_columns(None if fields is None else frozenset(fields))
        if not self._postgres:
            written: set[str] = set()
            for run, expected_version in writes:
                try:
                    await self._update_columns(run, expected_version, columns)
                except Conflict:
                    continue
                written.add(run.id)
            await SqlRunEventRepository(self._connection).add_many(
                [event for event in events if event.run_id in written]
            )
            return written
        params = _update_many_params(writes, columns, events)
        rows = await self._fetch(_update_each_statement(columns, bool(events)), params)
        return {row[0] for row in rows}

    async def _update_columns(
        self, run: TaskRun, expected_version: int, columns: tuple[Any, ...]
    ) -> None:
        row = run_to_row(run)
        result = await self._execute(
            update(task_runs)
            .where(_c.id == run.id, _c.version == expected_version)
            .values({column.name: row[column.name] for column in columns})
        )
        if result.rowcount == 0:
            raise Conflict(
                f"run {run.id} is gone or no longer at version {expected_version}",
                field="version",
            )

    async def renew_leases(
        self, held: Sequence[tuple[str, int]], *, worker_id: str, now: datetime, lease: timedelta
    ) -> set[str]:
        if not held:
            return set()
        if not self._postgres:
            renewed: set[str] = set()
            for run_id, token in held:
                if await self.renew_lease(
                    run_id, worker_id=worker_id, token=token, now=now, lease=lease
                ):
                    renewed.add(run_id)
            return renewed
        held = sorted(held)  # in id order, as update_many's arrays go
        rows = await self._fetch(
            _RENEW_LEASES,
            {
                "ids": [run_id for run_id, _ in held],
                "tokens": [token for _, token in held],
                "worker_id": worker_id,
                "now": now,
                "expires": now + lease,
            },
        )
        return {row[0] for row in rows}

    async def append_output(
        self, run_id: str, text: str, *, worker_id: str, token: int, limit: int
    ) -> bool:
        so_far = func.coalesce(_c.output, "")
        result = await self._execute(
            update(task_runs)
            .where(
                _c.id == run_id,
                RUN_RUNNING,
                _c.version == token,
                _c.worker_id == worker_id,
                func.length(so_far) + len(text) <= limit,
            )
            .values(output=so_far + text)
            .returning(_c.id)
        )
        return bool(result.all())

    async def still_held(self, held: Sequence[tuple[str, int]], *, worker_id: str) -> set[str]:
        if not held:
            return set()
        tokens = dict(held)
        result = await self._execute(
            select(_c.id, _c.version).where(
                self._among(list(tokens)), RUN_RUNNING, _c.worker_id == worker_id
            )
        )
        rows: Sequence[Any] = result.all()
        return {run_id for run_id, version in rows if tokens.get(run_id) == version}

    def _among(self, run_ids: builtins.list[str]) -> ColumnElement[bool]:
        """``id = ANY(:ids)`` on PostgreSQL: one prepared statement whatever the count."""
        if self._postgres:
            return _c.id == any_(bindparam("run_ids", run_ids, type_=ARRAY(String)))
        return _c.id.in_(run_ids)

    async def _one(self, query: Select[Any]) -> TaskRun | None:
        row = await self._first(query)
        return None if row is None else run_from_row(row)

    async def _many(self, query: Select[Any]) -> builtins.list[TaskRun]:
        return [run_from_row(row) for row in await self._all(query)]


#: ``status = 'queued'`` in a form the planner cannot match with the predicate of the partial
#: ``ix_task_runs_queued`` index (the collation differs; for this ASCII value equality is the
#: same). A claim by id must walk the primary key: with statistics that think few runs are
#: queued, PostgreSQL would otherwise scan every queued run for each claim — worst exactly when
#: a backlog has built up.
_STILL_QUEUED: ColumnElement[bool] = _c.status.collate("C") == RunStatus.QUEUED.value


def _start_many_statement(*, one: bool = False, owners: bool = False) -> Any:
    """The statement of ``start_many`` on PostgreSQL (built once): the claim as
    :func:`_claim` makes it, by id and still queued (``_STILL_QUEUED``'s collation, to walk the
    primary key), its events, and the claimed rows with their tasks, typed by the tables'
    columns so that the rows map as a read of either table would.

    ``one``: the claim of a single run, ``id = ids[1]`` rather than ``id = ANY(ids)``. For
    ``ANY`` of an array parameter the generic plan assumes ten rows; with one id the custom
    plan is always cheaper, so PostgreSQL planned the statement again on every execution
    (0.25 ms, most of the claim at light load, where every claim is of one run).

    ``owners``: each task's owner's role too (``owner_role``, NULL for an owner who is gone),
    so that the executor policy has nothing left to read after the start."""
    changed = claim_changes(worker_id="", now=datetime.now(UTC), lease=timedelta(0))
    assignments = ", ".join(f'"{name}" = :claim_{name}' for name in changed)
    run_columns = ", ".join(f'c."{column.name}"' for column in task_runs.c)
    task_columns = ", ".join(f't."{column.name}" AS "t_{column.name}"' for column in tasks.c)
    chosen = "id = (CAST(:run_ids AS text[]))[1]" if one else "id = ANY(CAST(:run_ids AS text[]))"
    owner_column = ", u.role AS owner_role" if owners else ""
    owner_join = " LEFT JOIN users AS u ON u.id = t.owner_id" if owners else ""
    statement = text(
        f"""
        WITH claimed AS (
            UPDATE task_runs
            SET status = :running, version = version + 1, {assignments}
            WHERE {chosen} AND status COLLATE "C" = :queued
            RETURNING *
        ), logged AS (
            INSERT INTO run_events (id, run_id, task_id, from_status, to_status, at, actor, detail)
            SELECT (CAST(:event_ids AS text[]))[array_position(CAST(:run_ids AS text[]), c.id)],
                   c.id, c.task_id, :queued, :running, c.started_at, :actor,
                   CAST(:detail AS jsonb)
            FROM claimed AS c
            ORDER BY c.id
        )
        SELECT {run_columns}, {task_columns},
               ARRAY(SELECT d.upstream_id FROM task_dependencies AS d
                     WHERE d.task_id = t.id ORDER BY d.position) AS t_depends_on{owner_column}
        FROM claimed AS c LEFT JOIN tasks AS t ON t.id = c.task_id{owner_join}
        ORDER BY c.id
        """  # noqa: S608 - names from the tables, values as parameters
    ).bindparams(*(bindparam(f"claim_{name}", type_=task_runs.c[name].type) for name in changed))
    return statement.columns(
        *(result_column(c.name, c.type) for c in task_runs.c),
        *(result_column(f"t_{c.name}", c.type) for c in tasks.c),
        result_column("t_depends_on", ARRAY(String)),
        *((result_column("owner_role", String()),) if owners else ()),
    )


#: A run by id (what clients poll): on the driver (PostgreSQL).
_GET = driver.Prebuilt(select(task_runs).where(_c.id == bindparam("run_id")))
_START_MANY = driver.Prebuilt(_start_many_statement())
_START_ONE = driver.Prebuilt(_start_many_statement(one=True))
#: With the owners' roles: a start that has nothing to read after it, which a statement unit
#: of work runs in autocommit (one statement, atomic on its own).
_START_MANY_OWNED = driver.Prebuilt(_start_many_statement(owners=True), standalone=True)
_START_ONE_OWNED = driver.Prebuilt(_start_many_statement(one=True, owners=True), standalone=True)


def _by_id(run: TaskRun) -> str:
    return run.id


def _first_id(write: tuple[TaskRun, int]) -> str:
    return write[0].id


def _array_type(column: Any) -> str:
    """The PostgreSQL array element type a column's values travel as in ``unnest``."""
    if isinstance(column.type, UTCDateTime):
        return "timestamptz"
    if isinstance(column.type, Integer):  # SmallInteger and BigInteger too
        return "bigint"
    return "text"  # strings, and JSON documents as their text (cast to jsonb below)


#: Every column ``update`` writes: all but the id and the dependency bookkeeping.
def _claim(
    *conditions: ColumnElement[bool], worker_id: str, now: datetime, lease: timedelta
) -> Any:
    """The claim as one conditional ``UPDATE … RETURNING`` of the rows ``conditions`` select:
    the domain's claim (:meth:`TaskRun.claim`) — ``status`` running, ``version + 1`` and the
    fields of :func:`claim_changes` — shared by the single and the batch claim."""
    return (
        update(task_runs)
        .where(*conditions)
        .values(
            status=RunStatus.RUNNING.value,
            version=_c.version + 1,
            **claim_changes(worker_id=worker_id, now=now, lease=lease),
        )
        .returning(*task_runs.c)
    )


_WRITTEN = tuple(
    column for column in task_runs.c if column.name not in ("id", "dependents_resolved_at")
)
_JSON_COLUMNS = frozenset(column.name for column in _WRITTEN if isinstance(column.type, JSON))


@cache
def _written_columns(fields: frozenset[str] | None) -> tuple[Any, ...]:
    """The columns ``update_many`` writes for ``fields`` (all of them for None)."""
    if fields is None:
        return _WRITTEN
    unknown = fields - {column.name for column in _WRITTEN}
    if unknown:
        raise ValueError(f"not writable run fields: {sorted(unknown)}")
    return tuple(column for column in _WRITTEN if column.name in fields)


def _assignment(column: Any) -> str:
    if column.name in _JSON_COLUMNS:
        return f'"{column.name}" = CAST(v."{column.name}" AS jsonb)'
    return f'"{column.name}" = v."{column.name}"'


def _update_from_arrays(columns: tuple[Any, ...]) -> str:
    """``UPDATE … FROM unnest(<one array per column>)`` of the runs at their expected versions,
    returning the ids written: written out from the table's own column names (no outside
    input)."""
    return (
        "UPDATE task_runs AS r SET "  # noqa: S608
        + ", ".join(_assignment(column) for column in columns)
        + " FROM unnest(CAST(:id AS text[]), CAST(:expected AS bigint[]), "
        + ", ".join(f"CAST(:{c.name} AS {_array_type(c)}[])" for c in columns)
        + ') AS v("id", "expected", '
        + ", ".join(f'"{c.name}"' for c in columns)
        + ") WHERE r.id = v.id AND r.version = v.expected RETURNING r.id"
    )


@cache
def _update_many_statement(columns: tuple[Any, ...], with_events: bool = False) -> driver.Prebuilt:
    """:func:`_update_from_arrays`, once per column set; ``with_events``: the events' insert
    (``event_columns``) as a CTE of the same statement."""
    logged = f"WITH logged AS ({INSERT_FROM_ARRAYS.format(guard='true')}) " if with_events else ""
    return driver.Prebuilt(text(logged + _update_from_arrays(columns)))


@cache
def _update_each_statement(columns: tuple[Any, ...], with_events: bool) -> driver.Prebuilt:
    """:func:`_update_from_arrays` as a CTE, the events (of the runs it wrote only) inserted by
    another: atomic on its own, so a statement unit of work runs it."""
    guard = "e.run_id IN (SELECT id FROM written)"
    logged = f", logged AS ({INSERT_FROM_ARRAYS.format(guard=guard)})" if with_events else ""
    update = _update_from_arrays(columns)
    statement = f"WITH written AS ({update}){logged} SELECT id FROM written"  # noqa: S608
    return driver.Prebuilt(text(statement), standalone=True)


_LATEST_STATUSES = text(
    """
    SELECT v.task_id, r.id, r.status
    FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS v(task_id, position)
    CROSS JOIN LATERAL (
        SELECT id, status, created_at FROM task_runs
        WHERE task_id = v.task_id
        ORDER BY created_at DESC, id DESC
        LIMIT :n
    ) AS r
    ORDER BY v.position, r.created_at DESC, r.id DESC
    """
)

_RENEW_LEASES = driver.Prebuilt(
    text(
        """
    UPDATE task_runs AS r SET heartbeat_at = :now, lease_expires_at = :expires
    FROM unnest(CAST(:ids AS text[]), CAST(:tokens AS bigint[])) AS v(id, token)
    WHERE r.id = v.id AND r.version = v.token AND r.status = 'running'
      AND r.worker_id = :worker_id
    RETURNING r.id
    """
    )
)


def _update_many_params(
    writes: Sequence[tuple[TaskRun, int]], columns: tuple[Any, ...], events: Sequence[RunEvent]
) -> dict[str, list[Any] | None]:
    """The parameters of :func:`_update_many_statement` and :func:`_update_each_statement`:
    the runs' ids, expected versions and columns, and the events' columns if any. The runs go
    in id order: a plan that follows the array (a nested loop over the primary key, the plan
    of a large table) locks them in that order, as :meth:`SqlRunRepository.claim_many` does."""
    writes = sorted(writes, key=_first_id)
    runs = [run for run, _ in writes]
    params: dict[str, list[Any] | None] = {
        "id": [run.id for run in runs],
        "expected": [expected for _, expected in writes],
    }
    params.update(_column_arrays(runs, columns))
    if events:
        params.update(event_columns(events))
    return params


def _column_arrays(
    runs: Sequence[TaskRun], columns: tuple[Any, ...]
) -> dict[str, list[Any] | None]:
    """One list per column, as ``unnest`` takes them (see :func:`_array_type`); a column
    that is NULL in every run is sent as a NULL array instead, which ``unnest`` pads with
    NULLs just the same (a new run's lease, outcome and times: a third of its columns), so
    asyncpg encodes no element of it."""
    params: dict[str, list[Any] | None] = {}
    for column in columns:
        name = column.name
        values = [getattr(run, name) for run in runs]
        if all(value is None for value in values):
            params[name] = None
        elif name == "trigger" or name == "status":
            params[name] = [value.value for value in values]
        elif name in _JSON_COLUMNS:
            params[name] = [None if value is None else json_text(value) for value in values]
        elif isinstance(column.type, UTCDateTime):
            params[name] = [_instant(value) for value in values]
        else:
            params[name] = values
    return params


def _add_new_many_statement(ctes: str = "", column: str = "") -> TextClause:
    """New runs (every column but the dependency bookkeeping, which starts empty) and the
    events of those inserted, in one statement; written out from the table's own column
    names (no outside input). ``ctes`` and ``column``: see :class:`AlongsideInsert`."""
    names = ", ".join(f'"{c.name}"' for c in _WRITTEN)
    values = ", ".join(
        f'CAST(v."{c.name}" AS jsonb)' if c.name in _JSON_COLUMNS else f'v."{c.name}"'
        for c in _WRITTEN
    )
    arrays = ", ".join(f"CAST(:{c.name} AS {_array_type(c)}[])" for c in _WRITTEN)
    return text(
        f"WITH new_run AS (INSERT INTO task_runs (id, {names}) "  # noqa: S608
        f"SELECT v.id, {values} FROM unnest(CAST(:id AS text[]), {arrays}) "
        f"WITH ORDINALITY AS v(id, {names}, n) ORDER BY v.n "
        "ON CONFLICT DO NOTHING RETURNING id), "
        "new_event AS ("
        + INSERT_FROM_ARRAYS.format(guard="e.run_id IN (SELECT id FROM new_run)")
        + ")"
        + (f", {ctes}" if ctes else "")
        + " SELECT id"
        + (f", {column}" if column else "")
        + " FROM new_run"
    )


#: One statement, atomic on its own: a statement unit of work may run it in autocommit.
_ADD_NEW_MANY = driver.Prebuilt(_add_new_many_statement(), standalone=True)


@cache
def _add_new_many_with(ctes: str, column: str) -> driver.Prebuilt:
    """:data:`_ADD_NEW_MANY` with writes alongside (:class:`AlongsideInsert`), built once per
    pair of texts; one statement as well."""
    return driver.Prebuilt(_add_new_many_statement(ctes, column), standalone=True)


def _instant(value: datetime | None) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"refusing to store a naive datetime: {value!r}")
    return value


def _conditions(run_filter: RunFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if run_filter.owner_id is not None:
        conditions.append(_c.owner_id == run_filter.owner_id)
    if run_filter.team_ids is not None:
        conditions.append(_c.team_id.in_(sorted(run_filter.team_ids)))
    if run_filter.task_id is not None:
        conditions.append(_c.task_id == run_filter.task_id)
    if run_filter.statuses:
        conditions.append(_c.status.in_(sorted(s.value for s in run_filter.statuses)))
    if run_filter.trigger is not None:
        conditions.append(_c.trigger == run_filter.trigger.value)
    if run_filter.worker_id is not None:
        conditions.append(_c.worker_id == run_filter.worker_id)
    if run_filter.queue is not None:
        conditions.append(_c.queue == run_filter.queue)
    if run_filter.created_after is not None:
        conditions.append(_c.created_at >= run_filter.created_after)
    if run_filter.created_before is not None:
        conditions.append(_c.created_at < run_filter.created_before)
    return conditions
