"""Planner statistics that keep up with young tables (PostgreSQL).

The hot statements are prepared once per connection, and PostgreSQL caches a generic plan for
each. A plan made while a table was nearly empty — a fresh install, a new database — reads the
whole table (``id = ANY($1)`` and the ``unnest`` joins of the claims and outcomes become
sequential scans), and it is kept until the table is next analysed: by autovacuum, at the
earliest one ``autovacuum_naptime`` (a minute by default) after the first changes. Measured on a
fresh database under the REST benchmark: 2,918 sequential scans of ``task_runs`` reading 22
million rows in 40 seconds, PostgreSQL 44 % of the machine's CPU; with the tables analysed as
they grew, no further sequential scan and PostgreSQL at 34 %.

So the dispatcher calls :meth:`PlannerStatistics.refresh` every few seconds: a hot table whose
rows changed since its last analysis by more than it held then (and by at least ``floor``) is
analysed now. A young table is analysed a few times while it grows (each time it has about
doubled); a large one never here (autovacuum's 10 % comes first). ``ANALYZE`` invalidates the
cached plans of every session, so the next execution of each statement is planned on the new
statistics. A table this role may not analyse (PostgreSQL skips it with a warning: its
``analyze_count`` does not move) is left to autovacuum after the first attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("scheduler.persistence")

#: The tables the hot statements read by key, whose plans go wrong while they are young.
HOT_TABLES: tuple[str, ...] = ("task_runs", "run_events", "tasks")

_ANALYSES = text(
    "SELECT analyze_count FROM pg_stat_user_tables"
    " WHERE schemaname = current_schema() AND relname = :table"
)
_CHANGED = text(
    """
    SELECT s.relname, s.analyze_count
    FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY(CAST(:tables AS text[]))
      AND s.n_mod_since_analyze >= :floor
      AND s.n_mod_since_analyze > greatest(c.reltuples, 0)
    ORDER BY s.relname
    """
)


class PlannerStatistics:
    """Analyses the hot tables of ``engine``'s database while they are young (see module)."""

    def __init__(
        self, engine: AsyncEngine, *, tables: Sequence[str] = HOT_TABLES, floor: int = 1000
    ) -> None:
        unknown = set(tables) - set(HOT_TABLES)
        if unknown:
            raise ValueError(f"not a hot table: {sorted(unknown)}")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._tables = list(tables)
        self._floor = floor

    async def refresh(self) -> list[str]:
        """Analyse the tables that need it now; their names."""
        analysed: list[str] = []
        async with self._engine.connect() as connection:
            result = await connection.execute(
                _CHANGED, {"tables": self._tables, "floor": self._floor}
            )
            for name, analyses in result.all():
                # The name is one of HOT_TABLES (checked above), never outside input.
                await connection.exec_driver_sql(f'ANALYZE "{name}"')
                after = await connection.scalar(_ANALYSES, {"table": name})
                if after == analyses:  # skipped, with a warning: this role may not analyse it
                    logger.warning(
                        "table %s could not be analysed (not its owner?); left to autovacuum",
                        name,
                    )
                    self._tables.remove(name)
                    continue
                analysed.append(name)
        if analysed:
            logger.info("analysed %s: their rows grew past the planner's statistics", analysed)
        return analysed
