"""Operators' queue settings: paused, rate limit, max concurrency, who changed them last."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.elements import Label

from scheduler_domain.queue_settings import Fairness, QueueSettings
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.persistence.repositories.base import ConnectionSource, SqlRepository
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


def _from_row(row: RowMapping | dict[str, Any]) -> QueueSettings:
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


#: The settings' columns as they ride along with another row (``qs_<column>``): a task read
#: for a trigger brings its queue's settings in the same statement.
RIDING_COLUMNS: tuple[Label[Any], ...] = tuple(c.label(f"qs_{c.name}") for c in _c)


class ReadAhead:
    """Queue settings read along with other rows in the open transaction, by queue name
    (``None``: the queue has no stored settings), so that the gates do not read them again.
    The unit of work forgets them at every commit and rollback: a later transaction reads
    afresh, and so sees a pause committed meanwhile."""

    def __init__(self) -> None:
        self.settings: dict[str, QueueSettings | None] = {}

    def note(self, queue: str, row: RowMapping) -> None:
        """Keep the settings riding on ``row`` (its ``qs_`` columns) as ``queue``'s."""
        if row["qs_name"] is None:
            self.settings[queue] = None
        else:
            self.settings[queue] = _from_row({c.name: row[f"qs_{c.name}"] for c in _c})

    def clear(self) -> None:
        self.settings.clear()


class SqlQueueSettingsRepository(SqlRepository):
    what = "queue"

    def __init__(self, connection: ConnectionSource, *, read_ahead: ReadAhead | None = None):
        super().__init__(connection)
        self._read_ahead = read_ahead

    async def get(self, name: str) -> QueueSettings | None:
        row = await self._first(select(queue_settings).where(_c.name == name))
        return None if row is None else _from_row(row)

    async def get_many(self, names: Sequence[str]) -> builtins.list[QueueSettings]:
        wanted = sorted(set(names))
        if not wanted:
            return []
        known = self._read_ahead.settings if self._read_ahead is not None else {}
        if all(name in known for name in wanted):
            return [s for name in wanted if (s := known[name]) is not None]
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
        if self._read_ahead is not None:
            self._read_ahead.settings.pop(settings.name, None)

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        query = select(_c.name).where(_c.name.in_(wanted)).order_by(_c.name)
        return {row["name"] for row in await self._all(self._locked(query))}
