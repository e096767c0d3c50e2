"""The append-only audit trail of run transitions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select

from scheduler_domain.events import RunEvent
from scheduler_infrastructure.persistence.mappers import event_from_row, event_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import run_events


class SqlRunEventRepository(SqlRepository):
    what = "run event"

    async def add(self, event: RunEvent) -> None:
        await self._execute(insert(run_events).values(**event_to_row(event)))

    async def add_many(self, events: Sequence[RunEvent]) -> None:
        if events:
            await self._execute(insert(run_events), [event_to_row(e) for e in events])

    async def list_for_run(self, run_id: str) -> list[RunEvent]:
        """Oldest first; events stamped with the same instant keep their insertion order."""
        rows = await self._all(
            select(run_events)
            .where(run_events.c.run_id == run_id)
            .order_by(run_events.c.at, run_events.c.seq)
        )
        return [event_from_row(row) for row in rows]
