"""The event log: the append-only audit trail of run transitions, and every other recorded
event (task changes, skipped slots, ...) in the same table, read with one cursor.

How the cursor never skips an event committed late (docs/events.md): on PostgreSQL every row
carries its transaction's id (``txid``, a column default) and the log is served in (txid, seq)
order only below ``pg_snapshot_xmin(pg_current_snapshot())`` — the oldest transaction still in
progress — so no transaction can still commit a row before a position already served. SQLite
has one writer at a time, so ``seq`` (AUTOINCREMENT) is commit order, and txid is always 0."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, literal, or_, select, text, tuple_
from sqlalchemy.engine import RowMapping

from scheduler_application.ports.repositories import EventQuery
from scheduler_domain.events import (
    LOG_START,
    EventCursor,
    EventRecord,
    LoggedEvent,
    RunEvent,
    run_event_kind,
)
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.column_types import json_text
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.mappers import event_from_row, event_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.tables import run_events, tasks

_e = run_events.c

#: PostgreSQL: the oldest transaction still in progress, as of this statement's snapshot, that
#: may write to this database; every transaction below it has ended, so its rows are final.
#: Transaction ids are the cluster's: a transaction that ``pg_stat_activity`` shows holding an
#: id in another database cannot write here and is left out, so a long one there does not hold
#: this log back. An id not positively placed elsewhere (a prepared transaction, a hidden
#: column, a backend gone meanwhile) counts as ours: at worst an entry waits a little longer.
#: With nothing in progress here, the snapshot's ``xmax`` (the next id to be handed out).
HORIZON_SQL = """
    SELECT CAST(CAST(coalesce(
        (SELECT min(x) FROM pg_snapshot_xip(s) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity AS a
             WHERE a.backend_xid = xid(x)
               AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database())
         )),
        pg_snapshot_xmax(s)) AS text) AS bigint)
    FROM pg_current_snapshot() AS s
"""
_LOG_COLUMNS = (
    _e.seq,
    _e.txid,
    _e.id,
    _e.kind,
    _e.run_id,
    _e.task_id,
    _e.subject,
    _e.from_status,
    _e.to_status,
    _e.at,
    _e.actor,
    _e.detail,
)

#: Built once; the rows come as parameters (one statement, or one executemany for many).
_INSERT = insert(run_events)
#: PostgreSQL: the events as one array per column (``event_columns``), inserted in order; the
#: ``{guard}`` slot takes a condition (``SqlRunRepository.add_new_many`` writes them with
#: their runs).
INSERT_FROM_ARRAYS = """
    INSERT INTO run_events (id, run_id, task_id, from_status, to_status, at, actor, detail)
    SELECT e.id, e.run_id, e.task_id, e.from_status, e.to_status, e.at, e.actor,
           CAST(e.detail AS jsonb)
    FROM unnest(
        CAST(:event_id AS text[]), CAST(:event_run_id AS text[]), CAST(:event_task_id AS text[]),
        CAST(:event_from_status AS text[]), CAST(:event_to_status AS text[]),
        CAST(:event_at AS timestamptz[]), CAST(:event_actor AS text[]),
        CAST(:event_detail AS text[])
    ) WITH ORDINALITY AS e(id, run_id, task_id, from_status, to_status, at, actor, detail, n)
    WHERE {guard}
    ORDER BY e.n
"""
_INSERT_MANY = text(INSERT_FROM_ARRAYS.format(guard="true"))
#: PostgreSQL: non-run entries (``EventRecord``) as one array per column, inserted in order.
_RECORD_MANY = text(
    """
    INSERT INTO run_events (id, kind, task_id, owner_id, team_id, subject, at, actor, detail)
    SELECT r.id, r.kind, r.task_id, r.owner_id, r.team_id, r.subject, r.at, r.actor,
           CAST(r.detail AS jsonb)
    FROM unnest(
        CAST(:id AS text[]), CAST(:kind AS text[]), CAST(:task_id AS text[]),
        CAST(:owner_id AS text[]), CAST(:team_id AS text[]), CAST(:subject AS text[]),
        CAST(:at AS timestamptz[]), CAST(:actor AS text[]), CAST(:detail AS text[])
    ) WITH ORDINALITY AS r(id, kind, task_id, owner_id, team_id, subject, at, actor, detail, n)
    ORDER BY r.n
    """
)


def event_columns(events: Sequence[RunEvent]) -> dict[str, list[Any]]:
    for event in events:
        if event.at.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {event.at!r}")
    return {
        "event_id": [e.id for e in events],
        "event_run_id": [e.run_id for e in events],
        "event_task_id": [e.task_id for e in events],
        "event_from_status": [
            None if e.from_status is None else e.from_status.value for e in events
        ],
        "event_to_status": [e.to_status.value for e in events],
        "event_at": [e.at for e in events],
        "event_actor": [e.actor for e in events],
        "event_detail": [json_text(e.detail) for e in events],
    }


class SqlRunEventRepository(SqlRepository):
    what = "run event"

    async def add(self, event: RunEvent) -> None:
        await self._execute(_INSERT, [event_to_row(event)])

    async def add_many(self, events: Sequence[RunEvent]) -> None:
        """PostgreSQL: one ``INSERT … SELECT FROM unnest(<one array per column>)`` — no
        per-row work in SQLAlchemy — in the order given (``seq`` breaks ties by it)."""
        if not events:
            return
        if not self._postgres or len(events) == 1:
            await self._execute(_INSERT, [event_to_row(e) for e in events])
            return
        async with translated(self.what):
            await self._conn.execute(_INSERT_MANY, event_columns(events))

    async def list_for_run(self, run_id: str) -> list[RunEvent]:
        """Oldest first; events stamped with the same instant keep their insertion order."""
        rows = await self._all(
            select(run_events)
            .where(run_events.c.run_id == run_id)
            .order_by(run_events.c.at, run_events.c.seq)
        )
        return [event_from_row(row) for row in rows]

    async def record(self, record: EventRecord) -> None:
        await self.record_many([record])

    async def record_many(self, records: Sequence[EventRecord]) -> None:
        """PostgreSQL: one ``INSERT … SELECT FROM unnest(<one array per column>)`` whatever
        their number, in the order given; SQLite: one ``INSERT`` of many rows."""
        if not records:
            return
        if self._postgres and len(records) > 1:
            for record in records:
                if record.at.utcoffset() is None:
                    raise ValueError(f"refusing to store a naive datetime: {record.at!r}")
            columns = {
                "id": [r.id for r in records],
                "kind": [r.kind for r in records],
                "task_id": [r.task_id for r in records],
                "owner_id": [r.owner_id for r in records],
                "team_id": [r.team_id for r in records],
                "subject": [r.subject for r in records],
                "at": [r.at for r in records],
                "actor": [r.actor for r in records],
                "detail": [json_text(r.detail) for r in records],
            }
            async with translated(self.what):
                await self._conn.execute(_RECORD_MANY, columns)
            return
        await self._execute(
            _INSERT,
            [
                {
                    "id": record.id,
                    "kind": record.kind,
                    "task_id": record.task_id,
                    "owner_id": record.owner_id,
                    "team_id": record.team_id,
                    "subject": record.subject,
                    "at": record.at,
                    "actor": record.actor,
                    "detail": record.detail,
                }
                for record in records
            ],
        )

    def _horizon(self) -> ColumnElement[bool]:
        """Rows no transaction still running can come before (all rows on SQLite)."""
        if not self._postgres:
            return literal(True)
        return _e.txid < text(f"({HORIZON_SQL})")

    async def read_log(self, query: EventQuery, *, limit: int) -> list[LoggedEvent]:
        check_limit(limit)
        after = query.after
        conditions: list[ColumnElement[bool]] = [
            tuple_(_e.txid, _e.seq) > tuple_(literal(after.txid), literal(after.seq)),
            self._horizon(),
        ]
        statement = select(*_LOG_COLUMNS)
        if query.team_ids is not None:
            # The task's team as it is now (its events move with it); a deleted task's records
            # keep the team they were written for; a user's own records are theirs.
            statement = statement.select_from(run_events.outerjoin(tasks, tasks.c.id == _e.task_id))
            visible: ColumnElement[bool] = func.coalesce(tasks.c.team_id, _e.team_id).in_(
                sorted(query.team_ids)
            )
            if query.owner_id is not None:
                visible = or_(visible, _e.owner_id == query.owner_id)
            conditions.append(visible)
        if query.task_id is not None:
            conditions.append(_e.task_id == query.task_id)
        if query.run_id is not None:
            conditions.append(_e.run_id == query.run_id)
        if query.statuses:
            conditions.append(_e.kind.is_(None))
            conditions.append(_e.to_status.in_([s.value for s in query.statuses]))
        if query.kinds:
            conditions.append(_kinds_condition(query.kinds))
        rows = await self._all(
            statement.where(and_(*conditions)).order_by(_e.txid, _e.seq).limit(limit)
        )
        return [_logged(row) for row in rows]

    async def log_head(self) -> EventCursor:
        row = await self._all(
            select(_e.txid, _e.seq)
            .where(self._horizon())
            .order_by(_e.txid.desc(), _e.seq.desc())
            .limit(1)
        )
        if not row:
            return LOG_START
        return EventCursor(int(row[0]["txid"]), int(row[0]["seq"]))

    async def prune(self, *, before: datetime, limit: int) -> int:
        check_limit(limit)
        if before.utcoffset() is None:
            raise ValueError(f"refusing a naive datetime: {before!r}")
        newest = select(func.max(_e.seq)).scalar_subquery()
        oldest = select(_e.seq).where(_e.at < before, _e.seq < newest).order_by(_e.seq).limit(limit)
        result = await self._execute(delete(run_events).where(_e.seq.in_(oldest)))
        return int(result.rowcount or 0)


def _kinds_condition(kinds: Sequence[str]) -> ColumnElement[bool]:
    run_statuses = [k.removeprefix("run.") for k in kinds if k.startswith("run.")]
    others = [k for k in kinds if not k.startswith("run.")]
    parts: list[ColumnElement[bool]] = []
    if run_statuses:
        parts.append(and_(_e.kind.is_(None), _e.to_status.in_(run_statuses)))
    if others:
        parts.append(_e.kind.in_(others))
    return or_(*parts)


def _logged(row: RowMapping) -> LoggedEvent:
    from_status, to_status = row["from_status"], row["to_status"]
    kind = row["kind"] or run_event_kind(to_status)
    return LoggedEvent(
        cursor=EventCursor(int(row["txid"]), int(row["seq"])),
        id=row["id"],
        kind=kind,
        at=row["at"],
        actor=row["actor"],
        task_id=row["task_id"],
        run_id=row["run_id"],
        subject=row["subject"],
        from_status=None if from_status is None else RunStatus(from_status),
        to_status=None if to_status is None else RunStatus(to_status),
        detail=dict(row["detail"]),
    )
