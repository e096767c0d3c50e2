"""The append-only audit trail of run transitions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, text

from scheduler_domain.events import RunEvent
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.mappers import event_from_row, event_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import run_events

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
        "event_detail": [json.dumps(e.detail) for e in events],
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
