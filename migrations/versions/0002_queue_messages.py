"""queue tables: queue_messages and queue_dead_letters, for the Postgres run queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:00:00.000000+00:00

The tables serve only the Postgres queue adapter (``scheduler_infrastructure.queues.postgres``);
they are created on SQLite too, because the history is shared, and stay empty there. On
PostgreSQL the message table churns (every row is inserted, updated and deleted within seconds),
so it leaves room on each page for HOT updates and is vacuumed and analysed early.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _big_id() -> sa.types.TypeEngine:
    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instant() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "queue_messages",
        sa.Column("id", _big_id(), sa.Identity(always=False), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("enqueued_at", _instant(), server_default=sa.func.now(), nullable=False),
        sa.Column("available_at", _instant(), server_default=sa.func.now(), nullable=False),
        sa.Column("delivery_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column("locked_until", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_messages")),
    )
    op.create_index(
        "ix_queue_messages_queue_priority_id",
        "queue_messages",
        ["queue", sa.text("priority DESC"), "id"],
    )

    op.create_table(
        "queue_dead_letters",
        sa.Column("id", _big_id(), autoincrement=False, nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("enqueued_at", _instant(), nullable=False),
        sa.Column("delivery_count", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("dead_at", _instant(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_dead_letters")),
    )
    op.create_index("ix_queue_dead_letters_queue_id", "queue_dead_letters", ["queue", "id"])

    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE queue_messages SET (fillfactor = 70,"
            " autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02)"
        )


def downgrade() -> None:
    op.drop_table("queue_dead_letters")
    op.drop_table("queue_messages")
