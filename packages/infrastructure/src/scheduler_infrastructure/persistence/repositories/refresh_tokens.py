"""Rotating refresh tokens, grouped in families so that reuse of a spent one revokes them all."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from scheduler_application.errors import NotFound
from scheduler_domain.accounts import RefreshToken
from scheduler_infrastructure.persistence.mappers import (
    refresh_token_from_row,
    refresh_token_to_row,
)
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import refresh_tokens

_c = refresh_tokens.c


class SqlRefreshTokenRepository(SqlRepository):
    what = "refresh token"

    async def add(self, token: RefreshToken) -> None:
        await self._insert_new(refresh_tokens, refresh_token_to_row(token))

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        row = await self._first(select(refresh_tokens).where(_c.token_hash == token_hash))
        return None if row is None else refresh_token_from_row(row)

    async def update(self, token: RefreshToken) -> None:
        row = refresh_token_to_row(token)
        del row["id"]
        result = await self._execute(update(refresh_tokens).where(_c.id == token.id).values(**row))
        if result.rowcount == 0:
            raise NotFound(f"refresh token {token.id} not found", field="id")

    async def revoke_family(self, family_id: str, *, now: datetime) -> int:
        """Stamp ``revoked_at`` on every token of the family not revoked yet; how many."""
        result = await self._execute(
            update(refresh_tokens)
            .where(_c.family_id == family_id, _c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(result.rowcount)

    async def mark_used(self, token_id: str, *, now: datetime) -> bool:
        """One conditional ``UPDATE``: of racing rotations exactly one sees a row to change."""
        result = await self._execute(
            update(refresh_tokens)
            .where(_c.id == token_id, _c.used_at.is_(None), _c.revoked_at.is_(None))
            .values(used_at=now)
        )
        return result.rowcount == 1

    async def revoke_for_user(self, user_id: str, *, now: datetime) -> int:
        result = await self._execute(
            update(refresh_tokens)
            .where(_c.user_id == user_id, _c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return int(result.rowcount)
