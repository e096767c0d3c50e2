"""What the dispatcher decided for each slot, so "why didn't it fire?" has an answer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select

from scheduler_application.ports.repositories import PurgeBatch, PurgeKey
from scheduler_domain.events import SlotDecision
from scheduler_infrastructure.persistence.mappers import decision_from_row, decision_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.retention_queries import (
    decisions_window,
    deletable_decisions,
)
from scheduler_infrastructure.persistence.tables import slot_decisions

_c = slot_decisions.c


_INSERT = insert(slot_decisions)


class SqlDecisionRepository(SqlRepository):
    what = "slot decision"

    async def add(self, decision: SlotDecision) -> None:
        await self._execute(insert(slot_decisions).values(**decision_to_row(decision)))

    async def add_many(self, decisions: Sequence[SlotDecision]) -> None:
        if decisions:
            await self._execute(_INSERT, [decision_to_row(d) for d in decisions])

    async def list_for_task(self, task_id: str, *, limit: int) -> list[SlotDecision]:
        """Newest first: by decision time, then by slot."""
        check_limit(limit)
        rows = await self._all(
            select(slot_decisions)
            .where(_c.task_id == task_id)
            .order_by(_c.at.desc(), _c.slot.desc(), _c.id.desc())
            .limit(limit)
        )
        return [decision_from_row(row) for row in rows]

    async def for_slot(self, task_ids: Sequence[str], slot: datetime) -> list[SlotDecision]:
        if not task_ids:
            return []
        rows = await self._all(
            select(slot_decisions)
            .where(_c.task_id.in_(sorted(set(task_ids))), _c.slot == slot)
            .order_by(_c.at, _c.id)
        )
        return [decision_from_row(row) for row in rows]

    async def purge(
        self, *, before: datetime, limit: int, after: PurgeKey | None = None
    ) -> PurgeBatch:
        check_limit(limit)
        window = await self._all(
            self._locked(decisions_window(before=before, limit=limit, after=after))
        )
        if not window:
            return PurgeBatch(scanned=0, last=None, deleted=0)
        last = (window[-1]["at"], window[-1]["id"]) if len(window) == limit else None
        candidates = [row["id"] for row in window]
        ids = [row["id"] for row in await self._all(deletable_decisions(candidates))]
        if ids:
            await self._execute(delete(slot_decisions).where(_c.id.in_(ids)))
        return PurgeBatch(scanned=len(window), last=last, deleted=len(ids))
