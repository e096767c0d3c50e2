"""task row notifications: NOTIFY scheduler_task_rows with the id of a changed or deleted task

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 07:30:00.000000+00:00

PostgreSQL only. The API keeps the tasks it last read in memory (``GET /tasks/{id}`` without a
round trip; ``scheduler_application.tasks.read_cache``). So that no process serves a row that
changed, a trigger sends ``NOTIFY scheduler_task_rows, '<task id>'`` at the commit of every
update that changes a task's row — any column, the dispatcher's ``next_run_at`` included — and
of every delete (a team's deletion cascading to its tasks too), whichever process or tool wrote
it. Identical notifications of one transaction are folded into one by PostgreSQL. Inserts
notify nobody here: nothing caches a task before it exists (``scheduler_tasks``, migration
0003, still wakes the dispatcher for them).
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION scheduler_notify_task_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scheduler_task_rows', OLD.id::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER tasks_notify_row_update AFTER UPDATE ON tasks"
        " FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*)"
        " EXECUTE FUNCTION scheduler_notify_task_row()"
    )
    op.execute(
        "CREATE TRIGGER tasks_notify_row_delete AFTER DELETE ON tasks"
        " FOR EACH ROW EXECUTE FUNCTION scheduler_notify_task_row()"
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS tasks_notify_row_delete ON tasks")
    op.execute("DROP TRIGGER IF EXISTS tasks_notify_row_update ON tasks")
    op.execute("DROP FUNCTION IF EXISTS scheduler_notify_task_row()")
