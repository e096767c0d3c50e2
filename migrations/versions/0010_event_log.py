"""the event log: run_events also holds task changes and other recorded events, with a cursor
that never skips a late commit

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 21:40:00.000000+00:00

* ``run_events`` becomes the one ordered event log: ``run_id``, ``task_id`` and ``to_status``
  may be NULL (a task change, a skipped slot, a ``queue.paused``), and ``kind`` (NULL for a run
  transition, whose kind is ``run.<to_status>``), ``subject`` and ``owner_id`` are added.
* ``txid``: PostgreSQL fills it with the writing transaction's id (a column default, so no
  writer changes); the log is read in (txid, seq) order up to the oldest transaction still
  running (docs/events.md). Rows written before this revision get 0, so they come first in
  their old order. On SQLite it stays 0 and ``seq`` becomes AUTOINCREMENT (never reused).
* No ``NOTIFY`` trigger: a transaction that notifies takes a cluster-wide lock through its
  commit, which cut concurrent commits to a third here (docs/events.md); the API polls the
  log's head instead (one indexed row, every ``events.poll_seconds``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TXID = "CAST(CAST(pg_current_xact_id() AS text) AS bigint)"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    kwargs = (
        {} if postgres else {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}}
    )
    with op.batch_alter_table("run_events", **kwargs) as batch:  # type: ignore[arg-type]
        batch.alter_column("run_id", existing_type=sa.String(64), nullable=True)
        batch.alter_column("task_id", existing_type=sa.String(64), nullable=True)
        batch.alter_column("to_status", existing_type=sa.String(32), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(64), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(200), nullable=True))
        batch.add_column(sa.Column("owner_id", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("txid", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    op.create_index("ix_run_events_txid_seq", "run_events", ["txid", "seq"])
    if postgres:
        op.execute(f"ALTER TABLE run_events ALTER COLUMN txid SET DEFAULT {_TXID}")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Entries that are not run transitions have no place in the old table.
    op.execute("DELETE FROM run_events WHERE run_id IS NULL OR kind IS NOT NULL")
    op.drop_index("ix_run_events_txid_seq", table_name="run_events")
    kwargs = (
        {} if postgres else {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": False}}
    )
    with op.batch_alter_table("run_events", **kwargs) as batch:  # type: ignore[arg-type]
        batch.drop_column("txid")
        batch.drop_column("owner_id")
        batch.drop_column("subject")
        batch.drop_column("kind")
        batch.alter_column("to_status", existing_type=sa.String(32), nullable=False)
        batch.alter_column("task_id", existing_type=sa.String(64), nullable=False)
        batch.alter_column("run_id", existing_type=sa.String(64), nullable=False)
