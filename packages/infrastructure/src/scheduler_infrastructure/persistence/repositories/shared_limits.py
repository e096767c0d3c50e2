"""Named shared limits and the circuit breakers' state."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from scheduler_domain.circuits import Circuit, CircuitState
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.shared_limits import Partition, SharedLimit
from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.repositories.base import SqlRepository
from scheduler_infrastructure.persistence.tables import (
    circuits,
    shared_limits,
    task_limits,
    task_runs,
    tasks,
)

_c = shared_limits.c
_IN_FLIGHT = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


def _rate(text: str | None) -> RateLimit | None:
    return None if text is None else RateLimit.parse(text)


def _text(rate: RateLimit | None) -> str | None:
    return None if rate is None else str(rate)


def _limit_row(limit: SharedLimit) -> dict[str, Any]:
    return {
        "name": limit.name,
        "description": limit.description,
        "rate": _text(limit.rate),
        "partition_by": None if limit.partition_by is None else limit.partition_by.value,
        "partition_rate": _text(limit.partition_rate),
        "max_concurrency": limit.max_concurrency,
        "failure_threshold": limit.failure_threshold,
        "cool_down_seconds": None if limit.cool_down is None else limit.cool_down.total_seconds(),
        "updated_by": limit.updated_by,
        "updated_at": limit.updated_at,
    }


def _limit(row: RowMapping) -> SharedLimit:
    cool_down = row["cool_down_seconds"]
    partition = row["partition_by"]
    return SharedLimit(
        name=row["name"],
        description=row["description"],
        rate=_rate(row["rate"]),
        partition_by=None if partition is None else Partition(partition),
        partition_rate=_rate(row["partition_rate"]),
        max_concurrency=row["max_concurrency"],
        failure_threshold=row["failure_threshold"],
        cool_down=None if cool_down is None else timedelta(seconds=cool_down),
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


def _bound(name: str, queues: Sequence[str]) -> Any:
    """Runs of tasks bound to the limit ``name``, directly or through one of ``queues``."""
    bound = select(task_limits.c.task_id).where(task_limits.c.limit_name == name)
    condition: Any = task_runs.c.task_id.in_(bound)
    if queues:
        in_queue = select(tasks.c.id).where(tasks.c.queue.in_(sorted(set(queues))))
        condition = or_(condition, task_runs.c.task_id.in_(in_queue))
    return condition


def _upsert(postgres: bool, table: Any, row: dict[str, Any]) -> Any:
    dialect = postgresql if postgres else sqlite
    changed = {key: value for key, value in row.items() if key != "name"}
    return (
        dialect.insert(table)
        .values(**row)
        .on_conflict_do_update(index_elements=["name"], set_=changed)
    )


class SqlSharedLimitRepository(SqlRepository):
    what = "limit"

    async def get(self, name: str) -> SharedLimit | None:
        row = await self._first(select(shared_limits).where(_c.name == name))
        return None if row is None else _limit(row)

    async def get_many(self, names: Sequence[str]) -> builtins.list[SharedLimit]:
        wanted = sorted(set(names))
        if not wanted:
            return []
        rows = await self._all(select(shared_limits).where(_c.name.in_(wanted)))
        return [_limit(row) for row in rows]

    async def list(self) -> builtins.list[SharedLimit]:
        return [_limit(row) for row in await self._all(select(shared_limits).order_by(_c.name))]

    async def save(self, limit: SharedLimit) -> None:
        await self._execute(_upsert(self._postgres, shared_limits, _limit_row(limit)))

    async def delete(self, name: str) -> bool:
        result = await self._execute(delete(shared_limits).where(_c.name == name))
        return bool(result.rowcount)

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        query = select(_c.name).where(_c.name.in_(wanted)).order_by(_c.name)
        return {row["name"] for row in await self._all(self._locked(query))}

    async def count_in_flight(self, bound_queues: dict[str, builtins.list[str]]) -> dict[str, int]:
        """One indexed count per limit: runs in flight of the tasks ``task_limits`` binds to
        it, or of the tasks in the queues bound to it."""
        return await self._count_bound(bound_queues, _IN_FLIGHT)

    async def count_pending(self, bound_queues: dict[str, builtins.list[str]]) -> dict[str, int]:
        return await self._count_bound(bound_queues, (RunStatus.PENDING.value,))

    async def _count_bound(
        self, bound_queues: dict[str, builtins.list[str]], statuses: tuple[str, ...]
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, queues in sorted(bound_queues.items()):
            query = (
                select(func.count())
                .select_from(task_runs)
                .where(task_runs.c.status.in_(statuses), _bound(name, queues))
            )
            counts[name] = int(await self._scalar(query) or 0)
        return counts

    async def count_in_flight_by_partition(
        self, name: str, queues: Sequence[str], *, by: Partition
    ) -> dict[str, int]:
        column = task_runs.c.owner_id if by is Partition.OWNER else task_runs.c.task_id
        rows = await self._all(
            select(column.label("partition"), func.count().label("n"))
            .where(task_runs.c.status.in_(_IN_FLIGHT), _bound(name, queues))
            .group_by(column)
        )
        return {row["partition"]: int(row["n"]) for row in rows}

    async def referencing_tasks(self, name: str) -> int:
        query = select(func.count()).where(task_limits.c.limit_name == name)
        return int(await self._scalar(query) or 0)

    async def referencing_task_names(self, name: str, *, limit: int) -> builtins.list[str]:
        rows = await self._all(
            select(tasks.c.name)
            .join(task_limits, task_limits.c.task_id == tasks.c.id)
            .where(task_limits.c.limit_name == name)
            .order_by(tasks.c.name)
            .limit(limit)
        )
        return [row["name"] for row in rows]


def _circuit_row(circuit: Circuit) -> dict[str, Any]:
    return {
        "name": circuit.name,
        "state": circuit.state.value,
        "failures": circuit.failures,
        "opened_at": circuit.opened_at,
        "probe_run_id": circuit.probe_run_id,
        "probe_at": circuit.probe_at,
        "updated_at": circuit.updated_at,
    }


def _circuit(row: RowMapping) -> Circuit:
    return Circuit(
        name=row["name"],
        state=CircuitState(row["state"]),
        failures=row["failures"],
        opened_at=row["opened_at"],
        probe_run_id=row["probe_run_id"],
        probe_at=row["probe_at"],
        updated_at=row["updated_at"],
    )


class SqlCircuitRepository(SqlRepository):
    what = "circuit"

    async def get_many(
        self, names: Sequence[str], *, for_update: bool = False
    ) -> builtins.list[Circuit]:
        wanted = sorted(set(names))
        if not wanted:
            return []
        query = select(circuits).where(circuits.c.name.in_(wanted)).order_by(circuits.c.name)
        if for_update and self._postgres:
            query = query.with_for_update()
        return [_circuit(row) for row in await self._all(query)]

    async def lock_many(self, names: Sequence[str]) -> set[str]:
        wanted = sorted(set(names))
        if not wanted:
            return set()
        query = select(circuits.c.name).where(circuits.c.name.in_(wanted))
        return {row["name"] for row in await self._all(self._locked(query))}

    async def ensure(self, names: Sequence[str], *, now: datetime) -> None:
        wanted = sorted(set(names))
        if not wanted:
            return
        dialect = postgresql if self._postgres else sqlite
        rows = [_circuit_row(Circuit(name=name, updated_at=now)) for name in wanted]
        await self._execute(dialect.insert(circuits).values(rows).on_conflict_do_nothing())

    async def list(self) -> builtins.list[Circuit]:
        rows = await self._all(select(circuits).order_by(circuits.c.name))
        return [_circuit(row) for row in rows]

    async def save(self, circuit: Circuit) -> None:
        await self._execute(_upsert(self._postgres, circuits, _circuit_row(circuit)))
