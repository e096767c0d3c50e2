"""The repositories behind shared limits, circuits and fair queues, on SQLite and PostgreSQL:
a fair queue's pending runs come in turns across fairness keys within priority, in-flight counts
per key and per limit (through tasks and queues), limits and circuits round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler_domain.circuits import Circuit, CircuitState
from scheduler_domain.ids import new_id
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.shared_limits import Partition, SharedLimit
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _task(owner: str, **fields: object) -> Task:
    return Task(
        owner_id=owner, name=f"t-{new_id()[-10:]}", executor="noop", queue="q",
        created_at=T0, updated_at=T0, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def _run(task: Task, n: int, *, priority: int = 5, queued: bool = False) -> TaskRun:
    run = TaskRun(
        task_id=task.id, owner_id=task.owner_id, trigger=RunTrigger.MANUAL,
        scheduled_for=T0 + timedelta(seconds=n), created_at=T0 + timedelta(seconds=n),
        queue="q", priority=priority, idempotency_key=new_id(),
    )  # fmt: skip
    if queued:
        run.mark_queued(now=T0)
    return run


async def test_fair_pending_runs_come_in_turns_within_priority(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    a, b, c = _task("a"), _task("b"), _task("x", fairness_key="b")  # c shares b's key
    runs = [_run(a, n) for n in range(5)] + [_run(b, 10 + n) for n in range(2)]
    runs += [_run(c, 20), _run(a, 30, priority=9)]
    async with uow_factory() as uow:
        for task in (a, b, c):
            await uow.tasks.add(task)
        for run in runs:
            await uow.runs.add(run)
        await uow.commit()
    async with uow_factory() as uow:
        taken = await uow.runs.pending_fair(T0 + timedelta(hours=1), queues=["q"], limit=6)
    order = [(r.owner_id, int((r.created_at - T0).total_seconds())) for r in taken]
    assert order == [("a", 30), ("a", 0), ("b", 10), ("a", 1), ("b", 11), ("a", 2)]


async def test_in_flight_per_key_and_per_limit(uow_factory: SqlUnitOfWorkFactory) -> None:
    bound = _task("a", limits=("vendor",))
    other = _task("b")
    async with uow_factory() as uow:
        await uow.tasks.add(bound)
        await uow.tasks.add(other)
        for n in range(3):
            await uow.runs.add(_run(bound, n, queued=True))
        await uow.runs.add(_run(other, 9, queued=True))
        await uow.runs.add(_run(other, 10))
        limit = SharedLimit(
            name="vendor", rate=RateLimit.parse("10/s"), partition_by=Partition.OWNER,
            partition_rate=RateLimit.parse("1/s"), max_concurrency=5, updated_at=T0,
        )  # fmt: skip
        await uow.limits.save(limit)
        await uow.circuits.ensure(["host:x"], now=T0)
        await uow.circuits.save(
            Circuit(name="limit:vendor", state=CircuitState.OPEN, failures=5, opened_at=T0,
                    updated_at=T0)
        )  # fmt: skip
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.runs.count_in_flight_by_fair_key(["q"]) == {("q", "a"): 3, ("q", "b"): 1}
        assert await uow.limits.count_in_flight({"vendor": []}) == {"vendor": 3}
        assert await uow.limits.count_in_flight({"vendor": ["q"]}) == {"vendor": 4}
        assert await uow.limits.count_pending({"vendor": []}) == {"vendor": 0}
        assert await uow.limits.count_pending({"vendor": ["q"]}) == {"vendor": 1}
        by_owner = await uow.limits.count_in_flight_by_partition("vendor", [], by=Partition.OWNER)
        assert by_owner == {"a": 3}
        assert await uow.limits.referencing_tasks("vendor") == 1
        assert await uow.limits.get("vendor") == limit
        circuits = {c.name: c for c in await uow.circuits.list()}
        assert circuits["host:x"].state is CircuitState.CLOSED
        assert circuits["limit:vendor"].opened_at == T0
        bound.limits = ()
        await uow.tasks.update(bound, expected_version=bound.version)
        assert await uow.limits.count_in_flight({"vendor": []}) == {"vendor": 0}
        await uow.runs.add(_run(other, 11))
        other.limits = ("vendor",)
        await uow.tasks.update(other, expected_version=other.version)
        assert await uow.limits.count_pending({"vendor": []}) == {"vendor": 2}
        assert await uow.limits.delete("vendor")
        assert not await uow.limits.delete("vendor")


async def test_referencing_task_names_in_name_order_up_to_the_limit(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    tasks = [_task("a", limits=("vendor", "other")) for _ in range(4)]
    tasks.append(_task("b", limits=("other",)))
    async with uow_factory() as uow:
        for task in tasks:
            await uow.tasks.add(task)
        await uow.commit()
    bound = sorted(t.name for t in tasks[:4])
    async with uow_factory() as uow:
        assert await uow.limits.referencing_task_names("vendor", limit=3) == bound[:3]
        assert await uow.limits.referencing_task_names("vendor", limit=10) == bound
        assert len(await uow.limits.referencing_task_names("other", limit=10)) == 5
        assert await uow.limits.referencing_task_names("nobody", limit=10) == []
