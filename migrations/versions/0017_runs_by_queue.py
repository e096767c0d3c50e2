"""runs by queue: the run list filtered by queue, newest first, off an index in its order

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 01:10:00.000000+00:00

``GET /api/v1/runs?queue=`` (and the console's runs page) reads ``WHERE queue = :q ORDER BY
created_at DESC, id DESC LIMIT n``. Without an index on ``queue`` PostgreSQL walks
``ix_task_runs_created_at`` backwards and filters, which reads every newer run of the other
queues before it finds a rare queue's (the whole table when the queue has none). With
``(queue, created_at, id)`` a page is a range scan of its own rows.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_task_runs_queue_created_at", "task_runs", ["queue", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_runs_queue_created_at", table_name="task_runs")
