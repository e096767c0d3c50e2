"""Bulk operations and their progress (see ``scheduler_application.operations.bulk``)."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import RowMapping

from scheduler_application.errors import NotFound
from scheduler_application.operations.bulk_operations import (
    BulkAction,
    BulkOperation,
    BulkStatus,
    Selection,
)
from scheduler_domain.accounts import Role
from scheduler_infrastructure.persistence.repositories.base import SqlRepository, check_limit
from scheduler_infrastructure.persistence.tables import bulk_operations

_c = bulk_operations.c


def _to_row(operation: BulkOperation) -> dict[str, Any]:
    return {
        "id": operation.id,
        "action": operation.action.value,
        "actor_id": operation.actor_id,
        "actor_role": operation.actor_role.value,
        "selection": operation.selection.to_document(),
        "status": operation.status.value,
        "total": operation.total,
        "done": operation.done,
        "succeeded": operation.succeeded,
        "skipped": operation.skipped,
        "failed": operation.failed,
        "results": list(operation.results),
        "position": operation.position,
        "frozen_at": operation.frozen_at,
        "error": operation.error,
        "created_at": operation.created_at,
        "heartbeat_at": operation.heartbeat_at,
        "finished_at": operation.finished_at,
    }


def _from_row(row: RowMapping) -> BulkOperation:
    return BulkOperation(
        id=row["id"],
        action=BulkAction(row["action"]),
        actor_id=row["actor_id"],
        actor_role=Role(row["actor_role"]),
        selection=Selection.from_document(row["selection"]),
        status=BulkStatus(row["status"]),
        total=row["total"],
        done=row["done"],
        succeeded=row["succeeded"],
        skipped=row["skipped"],
        failed=row["failed"],
        results=list(row["results"]),
        position=row["position"],
        frozen_at=row["frozen_at"],
        error=row["error"],
        created_at=row["created_at"],
        heartbeat_at=row["heartbeat_at"],
        finished_at=row["finished_at"],
    )


class SqlBulkOperationRepository(SqlRepository):
    what = "bulk operation"

    async def add(self, operation: BulkOperation) -> None:
        await self._execute(insert(bulk_operations).values(**_to_row(operation)))

    async def get(self, operation_id: str) -> BulkOperation | None:
        rows = await self._all(select(bulk_operations).where(_c.id == operation_id))
        return _from_row(rows[0]) if rows else None

    async def update(self, operation: BulkOperation) -> None:
        row = _to_row(operation)
        del row["id"]
        result = await self._execute(
            update(bulk_operations).where(_c.id == operation.id).values(**row)
        )
        if result.rowcount == 0:
            raise NotFound(f"operation {operation.id} not found", field="id")

    async def take_stale(
        self, *, stale_before: datetime, now: datetime, limit: int
    ) -> builtins.list[BulkOperation]:
        check_limit(limit)
        query = (
            select(bulk_operations)
            .where(
                _c.status == BulkStatus.RUNNING.value,
                (_c.heartbeat_at < stale_before) | _c.heartbeat_at.is_(None),
            )
            .order_by(_c.created_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        taken = [_from_row(row) for row in await self._all(query)]
        for operation in taken:
            # Compare-and-set on the heartbeat read: a second taker (SQLite has no row locks)
            # finds it changed and leaves the operation to the first.
            result = await self._execute(
                update(bulk_operations)
                .where(_c.id == operation.id, _c.heartbeat_at == operation.heartbeat_at)
                .values(heartbeat_at=now)
            )
            operation.heartbeat_at = now if result.rowcount else None
        return [o for o in taken if o.heartbeat_at == now]
