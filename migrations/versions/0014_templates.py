"""templates (task types), subscriptions as tasks, and what a run was made from

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 01:00:00.000000+00:00

* ``templates``: one task type per row (executor, parameter template, JSON Schema of the
  subscribers' parameters, default schedule and its bounds, policies, version).
* ``tasks.template_id`` / ``template_version`` / ``template_params``: a task made from a
  template (a subscription), indexed by template (a template change rewrites them all).
* ``task_runs.template_id`` / ``template_version`` / ``params`` / ``run_params``: the template
  version a run was made from, the executor params fixed for it, and the parameters it was
  given. All nullable: existing rows are tasks and runs without a template.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
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
        "templates",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("executor", sa.String(64), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("params_schema", _json(), nullable=False),
        sa.Column("schedule", _json(), nullable=True),
        sa.Column("min_interval_seconds", sa.Integer(), nullable=False),
        sa.Column("allow_custom_schedule", sa.Boolean(), nullable=False),
        sa.Column("policies", _json(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.UniqueConstraint("name", name="uq_templates_name"),
    )
    # Plain ALTER TABLE on both databases (SQLite has ADD/DROP COLUMN since 3.35): a batch
    # copy of task_runs would lose its expression index on SQLite.
    op.add_column("tasks", sa.Column("template_id", sa.String(64), nullable=True))
    op.add_column("tasks", sa.Column("template_version", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("template_params", _json(), nullable=True))
    op.create_index("ix_tasks_template_id", "tasks", ["template_id"])
    op.add_column("task_runs", sa.Column("template_id", sa.String(64), nullable=True))
    op.add_column("task_runs", sa.Column("template_version", sa.Integer(), nullable=True))
    op.add_column("task_runs", sa.Column("params", _json(), nullable=True))
    op.add_column("task_runs", sa.Column("run_params", _json(), nullable=True))


def downgrade() -> None:
    for column in ("run_params", "params", "template_version", "template_id"):
        op.drop_column("task_runs", column)
    op.drop_index("ix_tasks_template_id", table_name="tasks")
    for column in ("template_params", "template_version", "template_id"):
        op.drop_column("tasks", column)
    op.drop_table("templates")
