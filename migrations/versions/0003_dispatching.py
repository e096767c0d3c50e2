"""dispatching: dependency resolution marker, slot-decision lookup, task-change notifications

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00.000000+00:00

* ``task_runs.dependents_resolved_at``: when the dispatcher evaluated the dependents of a
  terminal run, with a partial index over the terminal runs not yet resolved. The resolver reads
  it by upstream task id, so runs of tasks that nobody depends on are never read.
* ``ix_slot_decisions_task_id_slot``: the decisions about one logical time of a task (whether
  an upstream was skipped, whether a dependent was already recorded as skipped).
* PostgreSQL only: ``NOTIFY scheduler_tasks`` from a trigger whenever a task is inserted or its
  definition changes (its ``version`` moves; the dispatcher's own ``next_run_at`` updates do not
  bump it), sent at commit by whichever process wrote it, so sleeping dispatchers wake at once.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNRESOLVED = (
    "dependents_resolved_at IS NULL AND status IN ('succeeded', 'dead_lettered', 'cancelled')"
)
_NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION scheduler_notify_task_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scheduler_tasks', '');
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "task_runs", sa.Column("dependents_resolved_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_task_runs_dependents_unresolved",
        "task_runs",
        ["task_id", "finished_at"],
        postgresql_where=sa.text(_UNRESOLVED),
        sqlite_where=sa.text(_UNRESOLVED),
    )
    op.create_index("ix_slot_decisions_task_id_slot", "slot_decisions", ["task_id", "slot"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(
            "CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks"
            " FOR EACH ROW EXECUTE FUNCTION scheduler_notify_task_change()"
        )
        op.execute(
            "CREATE TRIGGER tasks_notify_update AFTER UPDATE ON tasks FOR EACH ROW"
            " WHEN (OLD.version IS DISTINCT FROM NEW.version)"
            " EXECUTE FUNCTION scheduler_notify_task_change()"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tasks_notify_update ON tasks")
        op.execute("DROP TRIGGER IF EXISTS tasks_notify_insert ON tasks")
        op.execute("DROP FUNCTION IF EXISTS scheduler_notify_task_change()")
    op.drop_index("ix_slot_decisions_task_id_slot", table_name="slot_decisions")
    op.drop_index("ix_task_runs_dependents_unresolved", table_name="task_runs")
    # Not batch mode: rebuilding task_runs on SQLite would cascade-delete its events. SQLite
    # 3.35+ drops an unindexed column in place.
    op.drop_column("task_runs", "dependents_resolved_at")
