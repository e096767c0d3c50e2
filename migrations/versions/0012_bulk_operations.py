"""bulk operations: cancel, retry, re-trigger runs and pause, resume, delete tasks in bulk, as one
bounded job whose progress is recorded

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-05 22:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0012"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _instant() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bulk_operations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.Column("selection", _json(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("results", _json(), nullable=False),
        sa.Column("position", sa.String(512), nullable=True),
        sa.Column("frozen_at", _instant(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("heartbeat_at", _instant(), nullable=True),
        sa.Column("finished_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_operations")),
    )
    op.create_index(
        "ix_bulk_operations_status_heartbeat_at",
        "bulk_operations",
        ["status", "heartbeat_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_bulk_operations_status_heartbeat_at", table_name="bulk_operations")
    op.drop_table("bulk_operations")
