"""Named leases in the database, for loops that should run in one process at a time."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, literal, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.persistence.column_types import UTCDateTime
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.tables import leases


class SqlLeaseStore:
    """``LeaseStore`` over the ``leases`` table; each call is its own short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def try_acquire(
        self, resource: str, *, holder: str, ttl: timedelta, now: datetime
    ) -> bool:
        """One atomic upsert: insert the lease, or take it over when it has expired or is
        already ours (a renewal); when someone else holds it the row is left alone and no row
        comes back."""
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(leases).values(
            resource=resource, holder=holder, expires_at=now + ttl
        )
        statement = statement.on_conflict_do_update(
            index_elements=[leases.c.resource],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=or_(
                leases.c.holder == statement.excluded.holder,
                leases.c.expires_at <= literal(now, UTCDateTime()),
            ),
        ).returning(leases.c.holder)
        async with translated("lease"), self._engine.begin() as connection:
            taken = (await connection.execute(statement)).scalar()
        return taken == holder

    async def release(self, resource: str, *, holder: str) -> None:
        """Give the lease up if we hold it; someone else's lease is left alone."""
        async with translated("lease"), self._engine.begin() as connection:
            await connection.execute(
                delete(leases).where(leases.c.resource == resource, leases.c.holder == holder)
            )
