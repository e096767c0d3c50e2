"""Operators' queue settings: paused, rate limit, max concurrency, who changed them last."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from scheduler_domain.queue_settings import Fairness, QueueSettings
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import queue_settings

_c = queue_settings.c


def _to_row(settings: QueueSettings) -> dict[str, Any]:
    return {
        "name": settings.name,
        "paused": settings.paused,
        "rate_limit": None if settings.rate_limit is None else str(settings.rate_limit),
        "max_concurrency": settings.max_concurrency,
        "limits": list(settings.limits) or None,
        "fairness": settings.fairness.value,
        "fair_in_flight": settings.fair_in_flight,
        "updated_by": settings.updated_by,
        "updated_at": settings.updated_at,
    }


def _from_row(row: RowMapping) -> QueueSettings:
    text = row["rate_limit"]
    return QueueSettings(
        name=row["name"],
        paused=bool(row["paused"]),
        rate_limit=None if text is None else RateLimit.parse(text),
        max_concurrency=row["max_concurrency"],
        limits=tuple(row["limits"] or ()),
        fairness=Fairness(row["fairness"]),
        fair_in_flight=row["fair_in_flight"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


class SqlQueueSettingsRepository(SqlRepository):
    what = "queue"

    async def get(self, name: str) -> QueueSettings | None:
        row = await self._first(select(queue_settings).where(_c.name == name))
        return None if row is None else _from_row(row)

    async def get_many(self, names: Sequence[str]) -> builtins.list[QueueSettings]:
        wanted = sorted(set(names))
        if not wanted:
            return []
        rows = await self._all(select(queue_settings).where(_c.name.in_(wanted)))
        return [_from_row(row) for row in rows]

    async def list(self) -> builtins.list[QueueSettings]:
        rows = await self._all(select(queue_settings).order_by(_c.name))
        return [_from_row(row) for row in rows]

    async def save(self, settings: QueueSettings) -> None:
        """An upsert (``ON CONFLICT (name) DO UPDATE``): two first changes of one queue at
        once both land, the later one winning."""
        row = _to_row(settings)
        dialect = postgresql if self._postgres else sqlite
        statement = dialect.insert(queue_settings).values(**row)
        changed = {key: value for key, value in row.items() if key != "name"}
        await self._execute(statement.on_conflict_do_update(index_elements=["name"], set_=changed))

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        query = select(_c.name).where(_c.name.in_(wanted)).order_by(_c.name)
        return {row["name"] for row in await self._all(self._locked(query))}
