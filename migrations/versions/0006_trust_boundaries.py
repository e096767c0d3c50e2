"""trust boundaries: access-token generations, case-insensitive usernames, workers bound to
their credential, encrypted task secrets

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 23:10:00.000000+00:00

* ``users.token_generation``: every access token carries the generation it was issued under;
  logout, a password change or reset, disabling the user and a role change bump it, so every
  token issued before stops working at once.
* Usernames are compared case-insensitively: they are stored lower-cased (``Alice`` and
  ``alice`` are one account). Existing names are lower-cased here; two accounts whose names
  differ only in case stop the upgrade with both named, for an admin to rename one first.
* ``workers.principal_id``: the credential (user or API key) that registered the worker; only
  that credential may speak for the worker afterwards.
* ``tasks.secret_env``: write-only environment variables, ``{name: ciphertext}``; the API
  shows the names, never the values.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def upgrade() -> None:
    bind = op.get_bind()
    clashes = bind.execute(
        sa.text(
            "SELECT lower(username) AS name, count(*) AS n FROM users"
            " GROUP BY lower(username) HAVING count(*) > 1"
        )
    ).fetchall()
    if clashes:
        names = ", ".join(row.name for row in clashes)
        raise RuntimeError(
            "usernames become case-insensitive, but these differ only in case: "
            f"{names}; rename or delete one of each before upgrading"
        )
    op.execute("UPDATE users SET username = lower(username) WHERE username != lower(username)")
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("token_generation", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("principal_id", sa.String(64), nullable=True))
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("secret_env", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("secret_env")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("principal_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_generation")
