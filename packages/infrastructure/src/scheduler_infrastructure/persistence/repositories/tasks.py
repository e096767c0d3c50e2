"""Task definitions and their dependency edges."""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from scheduler_application.errors import Conflict
from scheduler_application.ports.repositories import Page, TaskFilter
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.cursors import decode_cursor, encode_cursor
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.mappers import (
    dependency_rows,
    limit_rows,
    task_from_row,
    task_to_row,
)
from scheduler_infrastructure.persistence.repositories.base import (
    ConnectionSource,
    SqlRepository,
    check_limit,
)
from scheduler_infrastructure.persistence.repositories.queue_settings import (
    RIDING_COLUMNS,
    ReadAhead,
)
from scheduler_infrastructure.persistence.repositories.task_batches import (
    DELETE_DEPENDENCIES,
    DELETE_LIMITS,
    update_many_params,
    update_many_statement,
)
from scheduler_infrastructure.persistence.tables import (
    TASK_ENABLED,
    TASK_FIRES_AHEAD,
    TASK_FIRES_AT_SLOT,
    queue_settings,
    task_dependencies,
    task_limits,
    tasks,
)

_deps = task_dependencies.c
#: PostgreSQL: a task's upstreams in the order given, as a column of the task's own row.
_UPSTREAMS = func.array(
    select(_deps.upstream_id)
    .where(_deps.task_id == tasks.c.id)
    .order_by(_deps.position)
    .correlate(tasks)
    .scalar_subquery()
).label("depends_on")


def _with_queue_settings(query: Select[Any]) -> Select[Any]:
    """``query`` with the settings of each task's queue riding along (``qs_`` columns, NULL
    for a queue without stored settings): the gates of a trigger need them right after."""
    return query.outerjoin(queue_settings, queue_settings.c.name == tasks.c.queue).add_columns(
        *RIDING_COLUMNS
    )


_GET = select(tasks).where(tasks.c.id == bindparam("task_id"))
_GET_WITH_UPSTREAMS = _with_queue_settings(_GET.add_columns(_UPSTREAMS))
#: PostgreSQL's reads by id, on the driver.
_GET_ON_DRIVER = driver.Prebuilt(_GET_WITH_UPSTREAMS)
_GET_MANY_ON_DRIVER = driver.Prebuilt(
    _with_queue_settings(
        select(tasks)
        .where(tasks.c.id == any_(bindparam("task_ids", type_=ARRAY(String))))
        .add_columns(_UPSTREAMS)
    )
)
_GET_FOR_UPDATE_ON_DRIVER = driver.Prebuilt(_GET_WITH_UPSTREAMS.with_for_update(of=tasks))
#: The distinct queue names, each found by one probe of ix_tasks_queue for the next one up.
_QUEUE_NAMES = text(
    """
    WITH RECURSIVE names AS (
        (SELECT queue FROM tasks ORDER BY queue LIMIT 1)
        UNION ALL
        SELECT (SELECT t.queue FROM tasks AS t WHERE t.queue > names.queue
                ORDER BY t.queue LIMIT 1)
        FROM names WHERE names.queue IS NOT NULL
    )
    SELECT queue FROM names WHERE queue IS NOT NULL
    """
)


_SET_NEXT_RUN_AT = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(next_run_at=bindparam("b_next", type_=tasks.c.next_run_at.type))
)


class SqlTaskRepository(SqlRepository):
    what = "task"

    def __init__(self, connection: ConnectionSource, *, read_ahead: ReadAhead | None = None):
        super().__init__(connection)
        #: Where a task read by id leaves its queue's settings for the gates (PostgreSQL).
        self._read_ahead = read_ahead

    async def add(self, task: Task) -> None:
        await self._insert_new(tasks, task_to_row(task))
        await self._insert_dependencies(task)

    async def get(self, task_id: str, *, for_update: bool = False) -> Task | None:
        """One prebuilt statement (every trigger reads its task), on the driver on PostgreSQL
        with its upstreams and its queue's settings riding along. ``FOR UPDATE`` on PostgreSQL
        when asked (SQLite needs no row lock: its writers are serialised)."""
        if not self._postgres:
            rows = await self._all_with(_GET, {"task_id": task_id})
            if not rows:
                return None
            return task_from_row(rows[0], (await self._upstreams([task_id])).get(task_id, ()))
        query = _GET_FOR_UPDATE_ON_DRIVER if for_update else _GET_ON_DRIVER
        found = await self._fetch(query, {"task_id": task_id})
        return self._read(found[0]) if found else None

    async def get_many(self, task_ids: Sequence[str]) -> builtins.list[Task]:
        """The tasks that exist, in the order asked, each once."""
        wanted = list(dict.fromkeys(task_ids))
        if not wanted:
            return []
        if self._postgres and len(wanted) == 1:
            # A trigger group of one task (light load, or one task's burst): ``id = $1`` gets a
            # generic plan, where PostgreSQL plans ``id = ANY($1)`` afresh on every execution
            # (0.5 ms of a busy server's time per trigger group, seen in its statement log).
            row = await self._fetch(_GET_ON_DRIVER, {"task_id": wanted[0]})
            return [self._read(row[0])] if row else []
        if self._postgres:  # every trigger group reads its tasks: one prebuilt statement
            rows = await self._fetch(_GET_MANY_ON_DRIVER, {"task_ids": wanted})
            found = {row["id"]: self._read(row) for row in rows}
        else:
            query = select(tasks).where(tasks.c.id.in_(wanted))
            found = {t.id: t for t in await self._load(query)}
        return [found[task_id] for task_id in wanted if task_id in found]

    async def get_by_name(self, owner_id: str, name: str) -> Task | None:
        query = (
            select(tasks)
            .where(tasks.c.owner_id == owner_id, tasks.c.name == name)
            .order_by(tasks.c.id)
            .limit(1)
        )
        found = await self._load(query)
        return found[0] if found else None

    async def get_in_team(self, team_id: str, name: str) -> Task | None:
        query = select(tasks).where(tasks.c.team_id == team_id, tasks.c.name == name)
        found = await self._load(query)
        return found[0] if found else None

    async def with_name(self, name: str) -> builtins.list[Task]:
        return await self._load(select(tasks).where(tasks.c.name == name).order_by(tasks.c.id))

    async def list(
        self, task_filter: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> Page[Task]:
        check_limit(limit)
        query = select(tasks).where(*_conditions(task_filter))
        if cursor is not None:
            (after,) = decode_cursor(cursor, 1)
            query = query.where(tasks.c.id > after)
        items = await self._load(query.order_by(tasks.c.id).limit(limit + 1))
        if len(items) <= limit:
            return Page(items)
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].id))

    async def with_template(self, template_id: str) -> builtins.list[Task]:
        query = select(tasks).where(tasks.c.template_id == template_id).order_by(tasks.c.id)
        if self._postgres:
            query = query.with_for_update()
        return await self._load(query)

    async def count(self, task_filter: TaskFilter) -> int:
        result = await self._execute(
            select(func.count()).select_from(tasks).where(*_conditions(task_filter))
        )
        return int(result.scalar_one())

    async def update(self, task: Task, *, expected_version: int) -> None:
        row = task_to_row(task)
        del row["id"]
        statement = (
            update(tasks)
            .where(tasks.c.id == task.id, tasks.c.version == expected_version)
            .values(**row)
        )
        # A savepoint, so that a rename onto a taken name leaves the transaction usable.
        async with translated(self.what), self._conn.begin_nested():
            result = await self._conn.execute(statement)
            if result.rowcount == 0:
                raise await self._conflict(task.id, expected_version)
            await self._conn.execute(delete(task_dependencies).where(_deps.task_id == task.id))
            await self._conn.execute(delete(task_limits).where(task_limits.c.task_id == task.id))
            await self._insert_dependencies(task)

    async def update_many(self, writes: Sequence[tuple[Task, int]]) -> None:
        """PostgreSQL: one ``UPDATE … FROM unnest`` for the rows (see ``task_batches``), then
        the upstreams and limits of all of them deleted and inserted at once (multi-row
        inserts): a few statements whatever the number of tasks. SQLite (no arrays, and no
        network round trips to save): one by one."""
        if not writes:
            return
        if not self._postgres:
            for task, expected_version in writes:
                await self.update(task, expected_version=expected_version)
            return
        async with translated(self.what):
            result = await self._conn.execute(update_many_statement(), update_many_params(writes))
            written = {row[0] for row in result.all()}
        for task, expected_version in writes:
            if task.id not in written:
                raise await self._conflict(task.id, expected_version)
        ids = [{"ids": [task.id for task, _ in writes]}]
        await self._execute(DELETE_DEPENDENCIES, ids)
        await self._execute(DELETE_LIMITS, ids)
        dependencies = [row for task, _ in writes for row in dependency_rows(task)]
        if dependencies:
            await self._execute(insert(task_dependencies), dependencies)
        bindings = [row for task, _ in writes for row in limit_rows(task)]
        if bindings:
            await self._execute(insert(task_limits), bindings)

    async def delete(self, task_id: str) -> None:
        """Delete the task with its runs, their events, and its slot decisions (cascade).
        Edges from other tasks that depend on it are the caller's to resolve."""
        await self._execute(delete(tasks).where(tasks.c.id == task_id))

    async def due(
        self, now: datetime, *, limit: int, ahead_until: datetime | None = None
    ) -> builtins.list[Task]:
        check_limit(limit)
        if ahead_until is None or ahead_until <= now:
            claimable = tasks.c.next_run_at <= now
        else:
            # Walks ix_tasks_due up to ahead_until: the tasks that fire at their slot and are
            # not due yet are passed over, and there are at most a look-ahead's worth of them.
            claimable = and_(
                tasks.c.next_run_at <= ahead_until,
                or_(tasks.c.next_run_at <= now, TASK_FIRES_AHEAD),
            )
        query = (
            select(tasks)
            .where(TASK_ENABLED, claimable)
            .order_by(tasks.c.next_run_at, tasks.c.id)
            .limit(limit)
        )
        return await self._load(self._locked(query))

    async def next_due_at(self, *, ahead: timedelta = timedelta(0)) -> datetime | None:
        """Two index lookups (``ix_tasks_due_ahead``, ``ix_tasks_due_at_slot``) in one
        statement, whatever the number of tasks."""
        if not ahead:
            earliest: datetime | None = await self._scalar(
                select(func.min(tasks.c.next_run_at)).where(TASK_ENABLED)
            )
            return earliest
        first_ahead = select(func.min(tasks.c.next_run_at)).where(TASK_FIRES_AHEAD)
        first_at_slot = select(func.min(tasks.c.next_run_at)).where(TASK_FIRES_AT_SLOT)
        row: Any = (
            await self._execute(
                select(first_ahead.scalar_subquery(), first_at_slot.scalar_subquery())
            )
        ).one()
        ahead_first: datetime | None = row[0]
        slot_first: datetime | None = row[1]
        times = [slot_first] if ahead_first is None else [ahead_first - ahead, slot_first]
        return min((t for t in times if t is not None), default=None)

    async def set_next_run_at(self, task_id: str, next_run_at: datetime | None) -> None:
        """No version bump, so user edits in flight do not conflict; a missing task is a no-op."""
        await self._execute(
            update(tasks).where(tasks.c.id == task_id).values(next_run_at=next_run_at)
        )

    async def set_next_run_at_many(self, changes: Sequence[tuple[str, datetime | None]]) -> None:
        """One executemany of a prebuilt statement (asyncpg pipelines it: one round trip)."""
        if not changes:
            return
        await self._execute(
            _SET_NEXT_RUN_AT,
            [{"b_id": task_id, "b_next": next_run_at} for task_id, next_run_at in changes],
        )

    async def dependents(self, task_id: str) -> builtins.list[Task]:
        query = (
            select(tasks)
            .join(task_dependencies, _deps.task_id == tasks.c.id)
            .where(_deps.upstream_id == task_id)
            .order_by(tasks.c.id)
        )
        return await self._load(query)

    async def dependency_edges(self) -> dict[str, tuple[str, ...]]:
        rows = await self._all(
            select(_deps.task_id, _deps.upstream_id).order_by(_deps.task_id, _deps.position)
        )
        return {task_id: tuple(upstreams) for task_id, upstreams in _group(rows).items()}

    async def queue_names(self) -> builtins.list[str]:
        """On PostgreSQL a loose index scan of ``ix_tasks_queue`` (one index probe per distinct
        queue, whatever the number of tasks: the gauges ask every 10 s); SQLite's planner does
        that itself for a ``DISTINCT`` over an indexed column."""
        if self._postgres:
            rows = await self._all(_QUEUE_NAMES)
        else:
            rows = await self._all(select(tasks.c.queue).distinct().order_by(tasks.c.queue))
        return [row["queue"] for row in rows]

    async def lock_many(self, task_ids: Sequence[str]) -> set[str]:
        """``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the transaction already holds the
        database's write lock, so every existing task counts as locked."""
        wanted = sorted(set(task_ids))
        if not wanted:
            return set()
        query = select(tasks.c.id).where(tasks.c.id.in_(wanted)).order_by(tasks.c.id)
        rows = await self._all(self._locked(query))
        return {row["id"] for row in rows}

    # -- helpers ---------------------------------------------------------------------------------

    def _read(self, row: Any) -> Task:
        """A task from a row of the reads by id (PostgreSQL): its upstreams ride along, and its
        queue's settings, which are left for the gates."""
        if self._read_ahead is not None:
            self._read_ahead.note(row["queue"], row)
        return task_from_row(row, row["depends_on"])

    async def _load(self, query: Select[Any]) -> builtins.list[Task]:
        """The tasks ``query`` selects, with their upstreams (on PostgreSQL as an array column
        of the same statement: one round trip instead of two)."""
        if self._postgres:
            rows = await self._all(query.add_columns(_UPSTREAMS))
            return [task_from_row(row, row["depends_on"]) for row in rows]
        rows = await self._all(query)
        if not rows:
            return []
        upstreams = await self._upstreams(row["id"] for row in rows)
        return [task_from_row(row, upstreams.get(row["id"], ())) for row in rows]

    async def _upstreams(self, task_ids: Iterable[str]) -> dict[str, builtins.list[str]]:
        query = (
            select(_deps.task_id, _deps.upstream_id)
            .where(_deps.task_id.in_(list(task_ids)))
            .order_by(_deps.task_id, _deps.position)
        )
        return _group(await self._all(query))

    async def _insert_dependencies(self, task: Task) -> None:
        """The task's rows in ``task_dependencies`` and ``task_limits``."""
        rows = dependency_rows(task)
        if rows:
            await self._execute(insert(task_dependencies), rows)
        bindings = limit_rows(task)
        if bindings:
            await self._execute(insert(task_limits), bindings)

    async def _conflict(self, task_id: str, expected_version: int) -> Conflict:
        current = await self._scalar(select(tasks.c.version).where(tasks.c.id == task_id))
        if current is None:
            return Conflict(f"task {task_id} no longer exists")
        return Conflict(
            f"task {task_id} is at version {current}, not {expected_version}", field="version"
        )


def _conditions(task_filter: TaskFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if task_filter.owner_id is not None:
        conditions.append(tasks.c.owner_id == task_filter.owner_id)
    if task_filter.team_ids is not None:
        conditions.append(tasks.c.team_id.in_(sorted(task_filter.team_ids)))
    if task_filter.enabled is not None:
        conditions.append(tasks.c.enabled == task_filter.enabled)
    if task_filter.queue is not None:
        conditions.append(tasks.c.queue == task_filter.queue)
    if task_filter.template_id is not None:
        conditions.append(tasks.c.template_id == task_filter.template_id)
    if task_filter.name_prefix:
        # substr, not LIKE: exact and case-sensitive on both backends, no escaping needed.
        prefix = task_filter.name_prefix
        conditions.append(func.substr(tasks.c.name, 1, len(prefix)) == prefix)
    return conditions


def _group(rows: Sequence[RowMapping]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        grouped[row["task_id"]].append(row["upstream_id"])
    return grouped
