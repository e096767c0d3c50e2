"""retention: indexes for deleting old runs and slot decisions in batches, and the tallies
that keep the status counts whole once runs are deleted

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 21:40:00.000000+00:00

The dispatcher's retention loop walks the finished runs (``finished_at, id`` of runs in a final
status, a partial index: live runs are not in it) and the slot decisions (``at, id``) a batch at
a time with a keyset, so each batch is an index range scan of at most a batch of rows however
large the tables are, and however many old rows a dependency still keeps.
``run_tallies`` holds, per status, how many runs the retention deleted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FINISHED = "status IN ('succeeded', 'cancelled', 'failed', 'timed_out', 'lost', 'dead_lettered')"


def upgrade() -> None:
    op.create_index(
        "ix_task_runs_finished",
        "task_runs",
        ["finished_at", "id"],
        postgresql_where=sa.text(_FINISHED),
        sqlite_where=sa.text(_FINISHED),
    )
    op.create_index("ix_slot_decisions_at", "slot_decisions", ["at", "id"])
    op.create_table(
        "run_tallies",
        sa.Column("status", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("run_tallies")
    op.drop_index("ix_slot_decisions_at", table_name="slot_decisions")
    op.drop_index("ix_task_runs_finished", table_name="task_runs")
