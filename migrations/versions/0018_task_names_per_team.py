"""task names per team: a task's name is unique within its team, not per creator

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 04:20:00.000000+00:00

Since teams (0016) a task belongs to a team, and its members find it there by name; two members
could each create a ``report`` in the same team (names were unique per creator,
``uq_tasks_owner_id_name``), and the team then held two tasks no name told apart. Now
``uq_tasks_team_id_name``.

Existing duplicates: in a personal team (the only team before 0016, id = its user's) there can
be none unless a global admin or operator moved another user's task into it (every task its
user created there was unique by name under the old rule). A shared team may hold some (its
members created them, or moved tasks in). Every team is handled alike: within each
(team, name), the oldest task (``created_at``, then ``id``) keeps its name; every other one is
renamed ``<name>-<the last 12 characters of its id>`` (cut to fit the 200-character limit, and
never onto a name the team already uses). Nothing else about them changes — id, runs, events,
dependencies (which refer to ids) — and each rename is logged (a WARNING from
``alembic.runtime.migration``, naming the task id, the team and both names).

Downgrade restores the per-creator rule, renaming the same way within each (creator, name) —
a creator may by then have tasks of one name in two teams.
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MAX_NAME = 200
_log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    _rename_duplicates("team_id")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("uq_tasks_owner_id_name", type_="unique")
        batch.create_unique_constraint("uq_tasks_team_id_name", ["team_id", "name"])


def downgrade() -> None:
    _rename_duplicates("owner_id")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_constraint("uq_tasks_team_id_name", type_="unique")
        batch.create_unique_constraint("uq_tasks_owner_id_name", ["owner_id", "name"])


def _rename_duplicates(scope: str) -> None:
    """Within each (``scope``, name) keep the oldest task's name and rename the others."""
    bind = op.get_bind()
    tasks = sa.table(
        "tasks",
        sa.column("id"),
        sa.column("name"),
        sa.column(scope),
        sa.column("created_at"),
    )
    groups = (
        sa.select(tasks.c[scope], tasks.c.name)
        .group_by(tasks.c[scope], tasks.c.name)
        .having(sa.func.count() > 1)
    )
    for key, name in bind.execute(groups).all():
        rows = bind.execute(
            sa.select(tasks.c.id)
            .where(tasks.c[scope] == key, tasks.c.name == name)
            .order_by(tasks.c.created_at, tasks.c.id)
        ).all()
        taken = set(bind.execute(sa.select(tasks.c.name).where(tasks.c[scope] == key)).scalars())
        for (task_id,) in rows[1:]:
            renamed = _free_name(name, str(task_id), taken)
            taken.add(renamed)
            bind.execute(sa.update(tasks).where(tasks.c.id == task_id).values(name=renamed))
            _log.warning(
                "task %s renamed from %r to %r: another task of %s %s has its name",
                task_id,
                name,
                renamed,
                scope.removesuffix("_id"),
                key,
            )


def _free_name(name: str, task_id: str, taken: set[str]) -> str:
    suffix = "-" + "".join(c for c in task_id if c.isalnum())[-12:]
    candidate = name[: _MAX_NAME - len(suffix)] + suffix
    n = 2
    while candidate in taken:
        more = f"{suffix}-{n}"
        candidate = name[: _MAX_NAME - len(more)] + more
        n += 1
    return candidate
