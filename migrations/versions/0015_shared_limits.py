"""named shared limits, circuit breakers, fair queues

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 01:00:00.000000+00:00

* ``shared_limits``: one row per named limit (global rate, per-partition rate, concurrency cap,
  circuit-breaker threshold and cool-down).
* ``task_limits``: which task draws on which limit (mirrors the new ``tasks.limits``), indexed
  by limit, to count a limit's runs in flight.
* ``circuits``: the circuit breakers' shared state.
* ``tasks.limits``, ``tasks.fairness_key``; ``queue_settings.limits``, ``.fairness``
  (``fifo``/``fair``) and ``.fair_in_flight``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
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
        "shared_limits",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), server_default="", nullable=False),
        sa.Column("rate", sa.String(64), nullable=True),
        sa.Column("partition_by", sa.String(16), nullable=True),
        sa.Column("partition_rate", sa.String(64), nullable=True),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("failure_threshold", sa.Integer(), nullable=True),
        sa.Column("cool_down_seconds", sa.Float(), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_shared_limits")),
    )
    op.create_table(
        "task_limits",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("limit_name", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_limits_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "limit_name", name=op.f("pk_task_limits")),
    )
    op.create_index("ix_task_limits_limit_name", "task_limits", ["limit_name"])
    op.create_table(
        "circuits",
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", _instant(), nullable=True),
        sa.Column("probe_run_id", sa.String(64), nullable=True),
        sa.Column("probe_at", _instant(), nullable=True),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_circuits")),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("limits", _json(), nullable=True))
        batch.add_column(sa.Column("fairness_key", sa.String(200), nullable=True))
    with op.batch_alter_table("queue_settings") as batch:
        batch.add_column(sa.Column("limits", _json(), nullable=True))
        batch.add_column(sa.Column("fairness", sa.String(8), server_default="fifo", nullable=False))
        batch.add_column(
            sa.Column("fair_in_flight", sa.Integer(), server_default=sa.text("10"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("queue_settings") as batch:
        batch.drop_column("fair_in_flight")
        batch.drop_column("fairness")
        batch.drop_column("limits")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("fairness_key")
        batch.drop_column("limits")
    op.drop_table("circuits")
    op.drop_index("ix_task_limits_limit_name", table_name="task_limits")
    op.drop_table("task_limits")
    op.drop_table("shared_limits")
