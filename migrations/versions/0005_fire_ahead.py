"""fire ahead: the dispatcher finds the next task to claim in two index lookups; queue names

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 15:00:00.000000+00:00

Tasks whose slots may be fired ahead (concurrency ``allow``, no ``max_concurrent``: see
``Task.fires_ahead``) are claimed up to ``dispatcher.fire_ahead_seconds`` before their
``next_run_at``, the others at it. "When is something next to claim" is then the earlier of two
minimums, one per kind, and each needs an index of its own: with only ``ix_tasks_due``, the
minimum over the rarer kind walks the index past every task of the other (a 100,000-task walk
every second when no task has, say, ``forbid``).

* ``ix_tasks_due_ahead``: ``next_run_at`` of the enabled tasks that fire ahead.
* ``ix_tasks_due_at_slot``: ``next_run_at`` of the other enabled tasks.
* ``ix_task_runs_queued_not_before``: queued runs with a ``not_before`` — in practice the runs
  fired ahead of their slot. A broker message for such a run is held by the dispatcher that
  fired it until the slot; if that dispatcher dies first, the relay finds the run here a few
  seconds after its slot (``RunRepository.held_past_due``) instead of after
  ``requeue_after_seconds``.
* ``ix_tasks_queue``: the gauges list the distinct queue names every 10 s; without an index
  that was a sequential scan of ``tasks`` (25 ms at 100,000 tasks), now one index probe per
  queue (a recursive "loose index scan" on PostgreSQL).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AHEAD_PG = "enabled = true AND concurrency = 'allow' AND max_concurrent IS NULL"
_AHEAD_SQLITE = "enabled = 1 AND concurrency = 'allow' AND max_concurrent IS NULL"
_AT_SLOT_PG = "enabled = true AND (concurrency != 'allow' OR max_concurrent IS NOT NULL)"
_AT_SLOT_SQLITE = "enabled = 1 AND (concurrency != 'allow' OR max_concurrent IS NOT NULL)"


_QUEUED_NOT_BEFORE = "status = 'queued' AND not_before IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_tasks_due_ahead",
        "tasks",
        ["next_run_at"],
        postgresql_where=sa.text(_AHEAD_PG),
        sqlite_where=sa.text(_AHEAD_SQLITE),
    )
    op.create_index(
        "ix_tasks_due_at_slot",
        "tasks",
        ["next_run_at"],
        postgresql_where=sa.text(_AT_SLOT_PG),
        sqlite_where=sa.text(_AT_SLOT_SQLITE),
    )
    op.create_index("ix_tasks_queue", "tasks", ["queue"])
    op.create_index(
        "ix_task_runs_queued_not_before",
        "task_runs",
        ["not_before"],
        postgresql_where=sa.text(_QUEUED_NOT_BEFORE),
        sqlite_where=sa.text(_QUEUED_NOT_BEFORE),
    )


def downgrade() -> None:
    op.drop_index("ix_task_runs_queued_not_before", table_name="task_runs")
    op.drop_index("ix_tasks_queue", table_name="tasks")
    op.drop_index("ix_tasks_due_at_slot", table_name="tasks")
    op.drop_index("ix_tasks_due_ahead", table_name="tasks")
