"""session notifications: NOTIFY scheduler_sessions when a credential's standing changes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 21:50:00.000000+00:00

PostgreSQL only (SQLite has no notifications; there the API's cache of accepted credentials
relies on its short time to live across processes). A trigger sends
``NOTIFY scheduler_sessions`` at the commit of any change that can end a credential — a user's
token generation, role, disabled flag or password hash, an API key's revocation, expiry, role,
owner or hash, and the deletion of either — whichever process or tool wrote it, so every API
process forgets the credentials it remembered. ``last_used_at`` writes notify nobody.
"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION scheduler_notify_session_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scheduler_sessions', '');
    RETURN NULL;
END
$$
"""
_USER_COLUMNS = ("token_generation", "role", "disabled", "password_hash")
_KEY_COLUMNS = ("revoked_at", "expires_at", "role", "owner_id", "secret_hash")


def _changed(columns: Sequence[str]) -> str:
    return " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table, columns in (("users", _USER_COLUMNS), ("api_keys", _KEY_COLUMNS)):
        op.execute(
            f"CREATE TRIGGER {table}_notify_session_update AFTER UPDATE ON {table}"
            f" FOR EACH ROW WHEN ({_changed(columns)})"
            " EXECUTE FUNCTION scheduler_notify_session_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_notify_session_delete AFTER DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION scheduler_notify_session_change()"
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in ("users", "api_keys"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_session_delete ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_session_update ON {table}")
    op.execute("DROP FUNCTION IF EXISTS scheduler_notify_session_change()")
