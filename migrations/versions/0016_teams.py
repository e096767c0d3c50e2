"""teams: tasks (with their runs and events) belong to a team; every user gets a personal team

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 01:30:00.000000+00:00

* ``teams`` (unique name) and ``team_members`` (team, user, role: viewer | editor | admin).
* Every existing user gets a personal team whose id is the user's id, named ``@<username>``,
  with the user as its admin. A task owner that is no user (none should exist) gets a team of
  the same id without members, so no task is left without a team (admins and operators see it,
  as before).
* ``tasks.team_id``, ``task_runs.team_id`` = the owner's personal team, i.e. ``owner_id``:
  who saw what is exactly as before. ``owner_id`` stays, as the creator.
* The event log's records about a task (``task.*``, skipped slots) carried their owner in
  ``owner_id``; they now carry the task's team in ``team_id`` (``owner_id`` is left for a
  user's own records, such as a webhook's).
* PostgreSQL: a change of membership notifies ``scheduler_sessions`` like a role change
  (0011), so every API process forgets the credentials (and the memberships they carried) it
  remembered.

Downgrade drops the teams; tasks keep their ``owner_id`` (their creator), so they are back with
whoever created them, and task records get the owner of the personal team they were in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id(name: str, *args: sa.ForeignKey, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(64), *args, nullable=nullable)


def _postgres() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _add_team_column(table: str) -> None:
    """NOT NULL from the start (SQLite cannot add the constraint later without copying the
    table): an empty default while the rows are filled in, dropped after on PostgreSQL (SQLite
    keeps it; every insert gives the column anyway)."""
    op.add_column(table, sa.Column("team_id", sa.String(64), nullable=False, server_default=""))


def upgrade() -> None:
    op.create_table(
        "teams",
        _id("id"),
        sa.Column("name", sa.String(100), nullable=False),
        _id("personal_of", nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    op.create_table(
        "team_members",
        _id("team_id"),
        _id("user_id"),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name=op.f("fk_team_members_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_team_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "user_id", name=op.f("pk_team_members")),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])

    op.execute(
        "INSERT INTO teams (id, name, personal_of, created_at)"
        " SELECT id, '@' || username, id, created_at FROM users"
    )
    op.execute(
        "INSERT INTO team_members (team_id, user_id, role, created_at)"
        " SELECT id, id, 'admin', created_at FROM users"
    )
    op.execute(
        "INSERT INTO teams (id, name, personal_of, created_at)"
        " SELECT owner_id, '@' || owner_id, NULL, MIN(created_at) FROM tasks"
        " WHERE owner_id NOT IN (SELECT id FROM teams) GROUP BY owner_id"
    )

    for table in ("tasks", "task_runs"):
        _add_team_column(table)
        op.execute(f"UPDATE {table} SET team_id = owner_id")  # noqa: S608 (constant names)
        if _postgres():
            op.alter_column(table, "team_id", server_default=None)
    op.create_index("ix_tasks_team_id", "tasks", ["team_id", "id"])
    op.create_index("ix_task_runs_team_id_created_at", "task_runs", ["team_id", "created_at", "id"])

    op.add_column("run_events", _id("team_id", nullable=True))
    op.execute(
        "UPDATE run_events SET team_id = owner_id, owner_id = NULL"
        " WHERE owner_id IS NOT NULL AND task_id IS NOT NULL"
    )

    if _postgres():
        for operation in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER team_members_notify_session_{operation.lower()}"
                f" AFTER {operation} ON team_members"
                " FOR EACH ROW EXECUTE FUNCTION scheduler_notify_session_change()"
            )


def downgrade() -> None:
    if _postgres():
        for operation in ("insert", "update", "delete"):
            op.execute(
                f"DROP TRIGGER IF EXISTS team_members_notify_session_{operation} ON team_members"
            )
    op.execute(
        "UPDATE run_events SET owner_id = COALESCE("
        "(SELECT personal_of FROM teams WHERE teams.id = run_events.team_id), team_id)"
        " WHERE team_id IS NOT NULL AND owner_id IS NULL"
    )
    op.drop_index("ix_task_runs_team_id_created_at", table_name="task_runs")
    op.drop_index("ix_tasks_team_id", table_name="tasks")
    for table in ("run_events", "task_runs", "tasks"):
        # Straight ALTER TABLE … DROP COLUMN, also on SQLite (3.35+): copying the table would
        # lose its partial indexes.
        op.drop_column(table, "team_id")
    op.drop_index("ix_team_members_user_id", table_name="team_members")
    op.drop_table("team_members")
    op.drop_table("teams")
