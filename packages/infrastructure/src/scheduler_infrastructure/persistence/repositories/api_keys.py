"""API keys: found by their public prefix, checked against the stored hash by the caller."""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import select, update

from scheduler_application.errors import NotFound
from scheduler_domain.accounts import ApiKey
from scheduler_infrastructure.persistence.mappers import api_key_from_row, api_key_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import api_keys

_c = api_keys.c


class SqlApiKeyRepository(SqlRepository):
    what = "api key"

    async def add(self, key: ApiKey) -> None:
        await self._insert_new(api_keys, api_key_to_row(key))

    async def get(self, key_id: str) -> ApiKey | None:
        row = await self._first(select(api_keys).where(_c.id == key_id))
        return None if row is None else api_key_from_row(row)

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        row = await self._first(select(api_keys).where(_c.prefix == prefix))
        return None if row is None else api_key_from_row(row)

    async def list(self, *, owner_id: str | None = None) -> builtins.list[ApiKey]:
        query = select(api_keys).order_by(_c.id)
        if owner_id is not None:
            query = query.where(_c.owner_id == owner_id)
        return [api_key_from_row(row) for row in await self._all(query)]

    async def update(self, key: ApiKey) -> None:
        row = api_key_to_row(key)
        del row["id"]
        result = await self._execute(update(api_keys).where(_c.id == key.id).values(**row))
        if result.rowcount == 0:
            raise NotFound(f"api key {key.id} not found", field="id")

    async def touch(self, key_id: str, *, now: datetime) -> None:
        await self._execute(update(api_keys).where(_c.id == key_id).values(last_used_at=now))
