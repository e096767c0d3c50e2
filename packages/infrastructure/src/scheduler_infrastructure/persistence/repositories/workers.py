"""Registered workers: capacity, liveness and draining."""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import delete, select, update

from scheduler_application.errors import NotFound
from scheduler_domain.worker import Worker, WorkerStatus
from scheduler_infrastructure.persistence.mappers import worker_from_row, worker_to_row
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import workers

_c = workers.c


class SqlWorkerRepository(SqlRepository):
    what = "worker"

    async def add(self, worker: Worker) -> None:
        await self._insert_new(workers, worker_to_row(worker))

    async def get(self, worker_id: str) -> Worker | None:
        row = await self._first(select(workers).where(_c.id == worker_id))
        return None if row is None else worker_from_row(row)

    async def get_for_update(self, worker_id: str) -> Worker | None:
        query = select(workers).where(_c.id == worker_id)
        if self._postgres:  # SQLite: the transaction holds the database's write lock anyway
            query = query.with_for_update()
        row = await self._first(query)
        return None if row is None else worker_from_row(row)

    async def update(self, worker: Worker) -> None:
        row = worker_to_row(worker)
        del row["id"]
        result = await self._execute(update(workers).where(_c.id == worker.id).values(**row))
        if result.rowcount == 0:
            raise NotFound(f"worker {worker.id} not found", field="id")

    async def list(self, *, status: WorkerStatus | None = None) -> builtins.list[Worker]:
        query = select(workers).order_by(_c.name, _c.id)
        if status is not None:
            query = query.where(_c.status == status.value)
        return [worker_from_row(row) for row in await self._all(query)]

    async def offline_since_before(self, cutoff: datetime, *, limit: int) -> builtins.list[Worker]:
        query = (
            select(workers)
            .where(_c.status == WorkerStatus.OFFLINE.value, _c.heartbeat_at < cutoff)
            .order_by(_c.heartbeat_at, _c.id)
            .limit(limit)
        )
        return [worker_from_row(row) for row in await self._all(query)]

    async def delete_offline(self, worker_id: str, *, before: datetime) -> bool:
        result = await self._execute(
            delete(workers).where(
                _c.id == worker_id,
                _c.status == WorkerStatus.OFFLINE.value,
                _c.heartbeat_at < before,
            )
        )
        return bool(result.rowcount)
