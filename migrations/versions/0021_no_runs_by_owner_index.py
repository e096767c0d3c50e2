"""no index of runs by owner: ix_task_runs_owner_id_created_at dropped

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 13:10:00.000000+00:00

Since teams (0016) every list of runs is scoped by team (``ix_task_runs_team_id_created_at``);
none filters by the run's creator. A run's row is written again at each status change (queued,
running, finished: updates that change indexed columns, so every index gets a new entry), so
an index nothing reads costs each run three index writes (docs/benchmarks.md, thirteenth
sitting: without the four listing indexes PostgreSQL spent about 11 % less CPU per run under
load, in one clean pair).
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_task_runs_owner_id_created_at", table_name="task_runs")


def downgrade() -> None:
    op.create_index(
        "ix_task_runs_owner_id_created_at", "task_runs", ["owner_id", "created_at", "id"]
    )
