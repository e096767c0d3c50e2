"""initial schema: tasks, runs and their records, workers, accounts, leases

Revision ID: 0001
Revises:
Create Date: 2026-11-22 05:36:58.422464+00:00

Generated with ``alembic revision --autogenerate`` against an empty database, then edited by
hand: shared column types named once, per-dialect partial-index predicates (PostgreSQL wants
``enabled = true``, SQLite stores booleans as 0/1), plain ``create_index`` calls, and a downgrade
that drops the tables (with their indexes) in reverse dependency order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _instant() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def _id(name: str, *args: sa.ForeignKey, **kwargs: bool) -> sa.Column:
    return sa.Column(name, sa.String(length=64), *args, **kwargs)


def _where(postgresql_sql: str, sqlite_sql: str | None = None) -> dict[str, sa.TextClause]:
    """A partial-index predicate, written as each backend stores and matches it."""
    return {
        "postgresql_where": sa.text(postgresql_sql),
        "sqlite_where": sa.text(sqlite_sql or postgresql_sql),
    }


_TABLES = (
    "run_events",
    "task_runs",
    "task_dependencies",
    "slot_decisions",
    "tasks",
    "workers",
    "users",
    "api_keys",
    "refresh_tokens",
    "leases",
)


def upgrade() -> None:
    op.create_table(
        "tasks",
        _id("id", nullable=False),
        _id("owner_id", nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("executor", sa.String(length=64), nullable=False),
        sa.Column("params", _json(), nullable=False),
        sa.Column("schedule", _json(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("labels", _json(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("retry", _json(), nullable=False),
        sa.Column("concurrency", sa.String(length=32), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("misfire", _json(), nullable=False),
        sa.Column("spread_seconds", sa.Float(), nullable=False),
        sa.Column("rate_limit", sa.String(length=64), nullable=True),
        sa.Column("trigger_rule", sa.String(length=32), nullable=False),
        sa.Column("next_run_at", _instant(), nullable=True),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_tasks_owner_id_name")),
    )
    op.create_index(
        "ix_tasks_due", "tasks", ["next_run_at"], **_where("enabled = true", "enabled = 1")
    )

    op.create_table(
        "task_dependencies",
        _id("task_id", nullable=False),
        _id("upstream_id", nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_dependencies_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "upstream_id", name=op.f("pk_task_dependencies")),
    )
    op.create_index("ix_task_dependencies_upstream_id", "task_dependencies", ["upstream_id"])

    op.create_table(
        "task_runs",
        _id("id", nullable=False),
        _id("task_id", nullable=False),
        _id("owner_id", nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _id("retry_of", nullable=True),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("scheduled_for", _instant(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("not_before", _instant(), nullable=True),
        _id("worker_id", nullable=True),
        sa.Column("lease_expires_at", _instant(), nullable=True),
        sa.Column("heartbeat_at", _instant(), nullable=True),
        sa.Column("queued_at", _instant(), nullable=True),
        sa.Column("started_at", _instant(), nullable=True),
        sa.Column("finished_at", _instant(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("traceparent", sa.String(length=128), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_runs_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
        sa.UniqueConstraint(
            "task_id",
            "scheduled_for",
            "attempt",
            name=op.f("uq_task_runs_task_id_scheduled_for_attempt"),
        ),
    )
    op.create_index(
        "uq_task_runs_task_id_idempotency_key",
        "task_runs",
        ["task_id", "idempotency_key"],
        unique=True,
        **_where("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_task_runs_pending", "task_runs", ["not_before"], **_where("status = 'pending'")
    )
    op.create_index(
        "ix_task_runs_running", "task_runs", ["lease_expires_at"], **_where("status = 'running'")
    )
    op.create_index(
        "ix_task_runs_worker", "task_runs", ["worker_id"], **_where("status = 'running'")
    )
    op.create_index(
        "ix_task_runs_queued",
        "task_runs",
        ["queue", sa.literal_column("priority DESC"), "created_at", "id"],
        **_where("status = 'queued'"),
    )
    op.create_index(
        "ix_task_runs_queued_at", "task_runs", ["queued_at"], **_where("status = 'queued'")
    )
    op.create_index("ix_task_runs_task_id_created_at", "task_runs", ["task_id", "created_at", "id"])
    op.create_index(
        "ix_task_runs_owner_id_created_at", "task_runs", ["owner_id", "created_at", "id"]
    )
    op.create_index("ix_task_runs_created_at", "task_runs", ["created_at", "id"])

    op.create_table(
        "run_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        _id("id", nullable=False),
        _id("run_id", nullable=False),
        _id("task_id", nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("at", _instant(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["task_runs.id"],
            name=op.f("fk_run_events_run_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_run_events")),
        sa.UniqueConstraint("id", name=op.f("uq_run_events_id")),
    )
    op.create_index("ix_run_events_run_id_at", "run_events", ["run_id", "at"])

    op.create_table(
        "slot_decisions",
        _id("id", nullable=False),
        _id("task_id", nullable=False),
        sa.Column("slot", _instant(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        _id("run_id", nullable=True),
        sa.Column("at", _instant(), nullable=False),
        sa.Column("detail", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_slot_decisions_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slot_decisions")),
    )
    op.create_index("ix_slot_decisions_task_id_at", "slot_decisions", ["task_id", "at"])

    op.create_table(
        "workers",
        _id("id", nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", _json(), nullable=False),
        sa.Column("labels", _json(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active_runs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("started_at", _instant(), nullable=False),
        sa.Column("heartbeat_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )

    op.create_table(
        "users",
        _id("id", nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=512), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )

    op.create_table(
        "api_keys",
        _id("id", nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=512), nullable=False),
        _id("owner_id", nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("expires_at", _instant(), nullable=True),
        sa.Column("revoked_at", _instant(), nullable=True),
        sa.Column("last_used_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index("ix_api_keys_owner_id", "api_keys", ["owner_id"])

    op.create_table(
        "refresh_tokens",
        _id("id", nullable=False),
        _id("user_id", nullable=False),
        _id("family_id", nullable=False),
        sa.Column("token_hash", sa.String(length=512), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("expires_at", _instant(), nullable=False),
        sa.Column("used_at", _instant(), nullable=True),
        sa.Column("revoked_at", _instant(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])

    op.create_table(
        "leases",
        sa.Column("resource", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", _instant(), nullable=False),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; children go before the tables they reference.
    for table in _TABLES:
        op.drop_table(table)
