"""Young tables are analysed as they grow, so the cached plans of the hot statements stop
reading the whole table (``persistence/planner_statistics.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.conftest import create_postgres_database, drop_postgres_database, migrate
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.planner_statistics import PlannerStatistics
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: The claim's shape: a few ids out of the table (``start_many``'s ``id = ANY``).
CLAIM = (
    "PREPARE claim(text[]) AS UPDATE task_runs SET version = version + 1"
    " WHERE id = ANY($1) AND status COLLATE \"C\" = 'queued' RETURNING id"
)


@pytest.fixture
async def young() -> AsyncIterator[AsyncEngine]:
    """A freshly migrated database, as a new install has: its tables never analysed."""
    url = await create_postgres_database()
    engine = create_engine(url, pool_size=2)
    try:
        await migrate(url)
        yield engine
    finally:
        await engine.dispose()
        await drop_postgres_database(url)


async def _add_runs(engine: AsyncEngine, count: int) -> Task:
    factory = SqlUnitOfWorkFactory(engine)
    task = Task(owner_id="o", name=f"young-{count}", executor="noop", created_at=T0, updated_at=T0)
    runs = [
        TaskRun(
            task_id=task.id,
            owner_id=task.owner_id,
            trigger=RunTrigger.MANUAL,
            status=RunStatus.SUCCEEDED,
            scheduled_for=T0 + timedelta(microseconds=n),
            created_at=T0,
            queue=task.queue,
        )
        for n in range(count)
    ]
    async with factory() as uow:
        await uow.tasks.add(task)
        await uow.runs.add_new_many(runs)
        await uow.commit()
    return task


async def _changes_counted(engine: AsyncEngine, table: str, at_least: int) -> None:
    """Wait until the statistics system has counted the inserts (backends report them
    asynchronously, within a second or so)."""
    async with engine.connect() as connection:
        for _ in range(200):
            counted = await connection.exec_driver_sql(
                f"SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = '{table}'"
            )
            if (counted.scalar() or 0) >= at_least:
                return
            await connection.rollback()
            await asyncio.sleep(0.05)
    raise AssertionError(f"{table}: the inserts were never counted")


async def _plan(engine: AsyncEngine) -> str:
    """The plan a connection that prepared the claim while the table was empty uses now."""
    async with engine.connect() as connection:
        plan = await connection.exec_driver_sql("EXPLAIN EXECUTE claim(ARRAY['a', 'b'])")
        return "\n".join(row[0] for row in plan)


async def test_a_young_table_is_analysed_and_the_cached_plans_follow(young: AsyncEngine) -> None:
    # One pooled connection, so the prepared statement (and its cached plan) is the same one.
    engine = create_engine(young.url.render_as_string(hide_password=False), pool_size=1)
    engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            await connection.exec_driver_sql(CLAIM)
            empty_plan = "\n".join(
                row[0] for row in await connection.exec_driver_sql("EXPLAIN EXECUTE claim('{}')")
            )
        statistics = PlannerStatistics(young, floor=500)
        assert await statistics.refresh() == []  # nothing changed yet

        await _add_runs(young, 3000)
        await _changes_counted(young, "task_runs", 3000)
        stale = await _plan(engine)
        assert "Seq Scan on task_runs" in stale, stale  # the plan made on an empty table

        assert await statistics.refresh() == ["task_runs"]
        fresh = await _plan(engine)
        assert "Seq Scan" not in fresh, fresh
        assert "pk_task_runs" in fresh, fresh
        assert "Seq Scan on task_runs" in empty_plan, empty_plan

        # Analysed once, it is not analysed again until it has grown by as much again.
        assert await statistics.refresh() == []
        await _add_runs(young, 1000)
        await _changes_counted(young, "task_runs", 1000)
        assert await statistics.refresh() == []
    finally:
        await engine.dispose()


async def test_only_the_hot_tables_are_taken(young: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="users"):
        PlannerStatistics(young, tables=["task_runs", "users"])


async def test_the_start_of_one_run_is_planned_once_per_connection(young: AsyncEngine) -> None:
    """At light load a worker starts one run at a time. With ``id = ANY($ids)`` on a table of
    some size PostgreSQL priced the generic plan at ten rows and planned the statement again
    on every execution; the one-run form (``id = ids[1]``) settles on one plan after the
    planner's five trials."""
    task = await _add_runs(young, 3000)
    async with young.connect() as connection:
        await connection.exec_driver_sql("ANALYZE task_runs")
        await connection.commit()
    engine = create_engine(young.url.render_as_string(hide_password=False), pool_size=1)
    factory = SqlUnitOfWorkFactory(engine)
    try:
        for n in range(8):  # one at a time: the pool's one connection is used throughout
            run = TaskRun(
                task_id=task.id,
                owner_id=task.owner_id,
                trigger=RunTrigger.MANUAL,
                status=RunStatus.QUEUED,
                scheduled_for=T0 + timedelta(days=1, microseconds=n),
                created_at=T0,
                queued_at=T0,
                queue=task.queue,
            )
            async with factory() as uow:
                await uow.runs.add_new_many([run])
                await uow.commit()
            async with factory() as uow:
                [(started, _)] = await uow.runs.start_many(
                    [run.id], worker_id="w-plan", now=T0, lease=timedelta(minutes=1)
                )
                await uow.commit()
            assert started.id == run.id
        async with engine.connect() as connection:
            prepared = await connection.exec_driver_sql(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            )
            [(generic, custom)] = [
                (generic, custom)
                for sql, generic, custom in prepared
                if "WITH claimed AS" in sql and "pg_prepared_statements" not in sql
            ]
        assert custom <= 5
        assert generic >= 3
    finally:
        await engine.dispose()
