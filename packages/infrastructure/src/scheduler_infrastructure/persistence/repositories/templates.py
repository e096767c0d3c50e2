"""Templates (task types); their subscriptions are tasks (``tasks.template_id``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import RowMapping

from scheduler_application.errors import Conflict
from scheduler_application.ports.repositories import Page
from scheduler_domain.schedules import parse_schedule, schedule_to_spec
from scheduler_domain.template import ScheduleBounds, Template
from scheduler_infrastructure.persistence.cursors import decode_cursor, encode_cursor
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.tables import templates

_c = templates.c


def _to_row(template: Template) -> dict[str, Any]:
    return {
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "executor": template.executor,
        "params": template.params,
        "params_schema": template.params_schema,
        "schedule": schedule_to_spec(template.schedule),
        "min_interval_seconds": int(template.bounds.min_interval.total_seconds()),
        "allow_custom_schedule": template.bounds.allow_custom,
        "policies": template.policies,
        "created_by": template.created_by,
        "created_at": template.created_at,
        "updated_at": template.updated_at,
        "version": template.version,
    }


def _from_row(row: RowMapping) -> Template:
    return Template(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        executor=row["executor"],
        params=dict(row["params"]),
        params_schema=dict(row["params_schema"]),
        schedule=parse_schedule(row["schedule"]),
        bounds=ScheduleBounds(
            min_interval=timedelta(seconds=row["min_interval_seconds"]),
            allow_custom=bool(row["allow_custom_schedule"]),
        ),
        policies=dict(row["policies"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


class SqlTemplateRepository(SqlRepository):
    what = "template"

    async def add(self, template: Template) -> None:
        await self._insert_new(templates, _to_row(template))

    async def get(self, template_id: str, *, for_update: bool = False) -> Template | None:
        query = select(templates).where(_c.id == template_id)
        if for_update and self._postgres:
            query = query.with_for_update()
        row = await self._first(query)
        return None if row is None else _from_row(row)

    async def get_by_name(self, name: str) -> Template | None:
        row = await self._first(select(templates).where(_c.name == name))
        return None if row is None else _from_row(row)

    async def list(self, *, limit: int, cursor: str | None = None) -> Page[Template]:
        check_limit(limit)
        query = select(templates)
        if cursor is not None:
            (after,) = decode_cursor(cursor, 1)
            query = query.where(_c.id > after)
        items = [_from_row(r) for r in await self._all(query.order_by(_c.id).limit(limit + 1))]
        if len(items) <= limit:
            return Page(items)
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].id))

    async def update(self, template: Template, *, expected_version: int) -> None:
        row = _to_row(template)
        del row["id"]
        statement = (
            update(templates)
            .where(_c.id == template.id, _c.version == expected_version)
            .values(**row)
        )
        async with translated(self.what), self._conn.begin_nested():
            result = await self._conn.execute(statement)
        if result.rowcount == 0:
            current = await self._scalar(select(_c.version).where(_c.id == template.id))
            if current is None:
                raise Conflict(f"template {template.id} no longer exists")
            raise Conflict(
                f"template {template.id} is at version {current}, not {expected_version}",
                field="version",
            )

    async def delete(self, template_id: str) -> None:
        await self._execute(delete(templates).where(_c.id == template_id))
