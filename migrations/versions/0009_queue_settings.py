"""queues you can steer: paused, rate limit and max concurrency per queue, stored

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 21:50:00.000000+00:00

``queue_settings`` holds one row per queue an operator changed: ``paused``, ``rate_limit`` (as
written, ``10/s``; null: the configured ``dispatcher.queue_rate_limits`` default applies),
``max_concurrency`` (runs queued or running at once across the fleet; null: no cap), and who
changed it last and when.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_settings",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("rate_limit", sa.String(length=64), nullable=True),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queue_settings")),
    )


def downgrade() -> None:
    op.drop_table("queue_settings")
