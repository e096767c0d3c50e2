"""SQL persistence: the schema, the repositories and unit of work over SQLAlchemy Core, the
lease store, and the migration runner. PostgreSQL (asyncpg) in production, SQLite (aiosqlite)
for the embedded default; one code path and one migration history for both."""

from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.leases import SqlLeaseStore
from scheduler_infrastructure.persistence.tables import metadata
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory

__all__ = [
    "SqlLeaseStore",
    "SqlUnitOfWork",
    "SqlUnitOfWorkFactory",
    "create_engine",
    "metadata",
]
