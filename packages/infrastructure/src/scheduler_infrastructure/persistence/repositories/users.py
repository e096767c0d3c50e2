"""User accounts."""

from __future__ import annotations

from sqlalchemy import func, select, update

from scheduler_application.errors import NotFound
from scheduler_application.ports.repositories import Page
from scheduler_domain.accounts import User
from scheduler_infrastructure.persistence.cursors import decode_cursor, encode_cursor
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.mappers import user_from_row, user_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.tables import users

_c = users.c


class SqlUserRepository(SqlRepository):
    what = "user"

    async def add(self, user: User) -> None:
        await self._insert_new(users, user_to_row(user))

    async def get(self, user_id: str) -> User | None:
        row = await self._first(select(users).where(_c.id == user_id))
        return None if row is None else user_from_row(row)

    async def get_by_username(self, username: str) -> User | None:
        row = await self._first(select(users).where(_c.username == username))
        return None if row is None else user_from_row(row)

    async def list(self, *, limit: int, cursor: str | None = None) -> Page[User]:
        check_limit(limit)
        query = select(users)
        if cursor is not None:
            (after,) = decode_cursor(cursor, 1)
            query = query.where(_c.id > after)
        rows = await self._all(query.order_by(_c.id).limit(limit + 1))
        items = [user_from_row(row) for row in rows[:limit]]
        return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)

    async def update(self, user: User) -> None:
        row = user_to_row(user)
        del row["id"]
        del row["token_generation"]  # raised only by bump_token_generation, never lowered
        # A savepoint, so that a rename onto a taken username leaves the transaction usable.
        async with translated(self.what), self._conn.begin_nested():
            result = await self._conn.execute(update(users).where(_c.id == user.id).values(**row))
        if result.rowcount == 0:
            raise NotFound(f"user {user.id} not found", field="id")

    async def bump_token_generation(self, user_id: str) -> int:
        """One ``UPDATE … SET token_generation = token_generation + 1``: concurrent bumps
        serialize on the row, so none is lost."""
        statement = (
            update(users)
            .where(_c.id == user_id)
            .values(token_generation=_c.token_generation + 1)
            .returning(_c.token_generation)
        )
        generation = await self._scalar(statement)
        if generation is None:
            raise NotFound(f"user {user_id} not found", field="id")
        return int(generation)

    async def count(self) -> int:
        return int(await self._scalar(select(func.count()).select_from(users)))
