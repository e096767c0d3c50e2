"""Registered workers: capacity, liveness and draining."""

from __future__ import annotations

import builtins

from sqlalchemy import select, update

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
