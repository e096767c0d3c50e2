"""queue listeners: the processes listening for the Postgres queue's notifications

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 12:00:00.000000+00:00

``queue_listeners`` has one row per process that consumes from the Postgres queue: its name,
the queues it has a consumer with free capacity for (a JSON array) and its last beat. Each
such process beats every second and reads the others' rows, so that a notification wakes one
of them rather than every one (``scheduler_infrastructure.queues.postgres``). On PostgreSQL
the table is unlogged: beats need no WAL, and after a crash the next beats fill it again. On
SQLite it exists (one history) and stays empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_listeners",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column(
            "beat_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queue_listeners")),
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute("ALTER TABLE queue_listeners SET UNLOGGED")


def downgrade() -> None:
    op.drop_table("queue_listeners")
