"""The driver path (``persistence/driver.py``): the hot prebuilt statements run by asyncpg on
the unit of work's own connection, skipping SQLAlchemy's execution, with the same results, the
same transaction, the same errors; and through SQLAlchemy whenever somebody listens to the
engine's statements (tracing)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Numeric, cast, event, literal, select
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from integration.conftest import wipe
from scheduler_application.errors import AlreadyExists, Unavailable
from scheduler_domain.accounts import Role, User
from scheduler_domain.ids import new_id
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence import driver
from scheduler_infrastructure.persistence.driver_errors import translated
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(minutes=5)
OUTCOME_FIELDS = ("status", "finished_at", "lease_expires_at", "result", "error", "version")


@pytest.fixture
async def engines(postgres_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine, list[str]]]:
    """Two engines on the session's database: one nobody listens to (the driver path), one
    whose statements are recorded (SQLAlchemy's path, as under tracing)."""
    plain = create_engine(postgres_url, pool_size=2)
    listened = create_engine(postgres_url, pool_size=2)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(listened.sync_engine, "before_cursor_execute", record)
    try:
        yield plain, listened, seen
    finally:
        await listened.dispose()
        await wipe(plain)  # the session's database is shared with the other tests
        await plain.dispose()


def _through_sqlalchemy(monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine) -> list[str]:
    """Note every statement SQLAlchemy's ``execute`` runs on ``engine``'s pool (not those of
    whatever else is running in this process)."""
    used: list[str] = []
    execute = AsyncConnection.execute

    async def noting(self: AsyncConnection, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if self.engine.pool is engine.pool:
            used.append(str(statement)[:60])
        return await execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(AsyncConnection, "execute", noting)
    return used


def _task(**overrides: Any) -> Task:
    values: dict[str, Any] = {
        "owner_id": "owner-driver",
        "name": f"driver-{new_id()[-12:]}",
        "executor": "noop",
        "params": {"sleep_seconds": 0, "fail": False},
        "timeout": timedelta(seconds=12.5),
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    return Task(**values)


async def _saved_task(factory: SqlUnitOfWorkFactory) -> Task:
    """A task stored and committed, for runs to refer to."""
    task = _task()
    async with factory() as uow:
        await uow.tasks.add(task)
        await uow.commit()
    return task


def _queued(task: Task) -> TaskRun:
    return TaskRun(
        task_id=task.id,
        owner_id=task.owner_id,
        trigger=RunTrigger.MANUAL,
        status=RunStatus.QUEUED,
        scheduled_for=T0 + timedelta(microseconds=int(new_id()[-6:], 36) % 1_000_000),
        created_at=T0,
        queued_at=T0,
        queue=task.queue,
        params={"sleep_seconds": 0.5},
    )


async def _hot_path(factory: SqlUnitOfWorkFactory) -> dict[str, Any]:
    """What a trigger, a claim, an outcome and the reads of both do, and what they read."""
    upstream = _task()
    task = _task(depends_on=(upstream.id,))
    runs = [_queued(task), _queued(task)]
    async with factory() as uow:
        await uow.tasks.add(upstream)
        await uow.tasks.add(task)
        created = [run.created_event(actor="test") for run in runs]
        inserted = await uow.runs.add_new_many(runs, events=created)
        again = await uow.runs.add_new_many(runs, events=created)
        await uow.commit()
    now = T0 + timedelta(minutes=1)
    async with factory() as uow:
        started = await uow.runs.start_many(
            [run.id for run in runs], worker_id="w-driver", now=now, lease=LEASE
        )
        await uow.commit()
    finished = []
    for run, _ in started:
        read_version = run.version
        run.finish(
            RunStatus.SUCCEEDED, token=run.version, result={"ok": [1, {"nested": "x"}]}, now=now
        )
        finished.append((run, read_version))
    async with factory() as uow:
        await uow.runs.update_many(finished, fields=OUTCOME_FIELDS)
        await uow.commit()
    async with factory.reads() as uow:
        read_runs = [await uow.runs.get(run.id) for run in runs]
        read_task = await uow.tasks.get(task.id)
        missing = await uow.runs.get("no-such-run")
    return {
        "inserted": inserted == {run.id for run in runs},
        "again": again,
        "started": [(run, claimed_task) for run, claimed_task in started],
        "runs": read_runs,
        "task": read_task,
        "missing": missing,
        "expected_task": task,
    }


async def test_the_hot_statements_skip_sqlalchemy_and_read_what_it_reads(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, listened, seen = engines
    through_sqlalchemy = await _hot_path(SqlUnitOfWorkFactory(listened))
    statements = " ".join(seen)
    assert "INSERT INTO task_runs" in statements
    assert "UPDATE task_runs" in statements

    used = _through_sqlalchemy(monkeypatch, plain)
    on_driver = await _hot_path(SqlUnitOfWorkFactory(plain))
    # Only the tasks' inserts (not on the driver) went through SQLAlchemy's execute.
    assert all("INSERT INTO task" in statement for statement in used), used

    for result in (through_sqlalchemy, on_driver):
        # Both runs are of one task: its row is decoded once, one Task for the two.
        [(_, first), (_, second)] = result["started"]
        assert first is second
        assert result["inserted"] is True
        assert result["again"] == set()
        assert result["missing"] is None
        assert result["task"] == result["expected_task"]
        for (run, claimed_task), read in zip(result["started"], result["runs"], strict=True):
            assert claimed_task == result["expected_task"]
            assert read is not None
            assert read.status is RunStatus.SUCCEEDED
            assert read.result == {"ok": [1, {"nested": "x"}]}
            assert read.params == {"sleep_seconds": 0.5}
            assert read.started_at == T0 + timedelta(minutes=1)
            assert read.started_at is not None
            assert read.started_at.tzinfo is UTC
            assert run.worker_id == "w-driver"
    # Field for field the same, ids and times aside.
    for left, right in zip(through_sqlalchemy["runs"], on_driver["runs"], strict=True):
        assert _shape(left) == _shape(right)
    assert _shape(through_sqlalchemy["task"]) == _shape(on_driver["task"])


def _shape(value: Any) -> dict[str, tuple[type, Any]]:
    """Every field's type and value, but those that differ between two runs of the path."""
    skipped = {"id", "task_id", "name", "depends_on", "scheduled_for"}
    shape: dict[str, tuple[type, Any]] = {}
    for field in dataclasses.fields(value):
        if field.name not in skipped:
            got = getattr(value, field.name)
            shape[field.name] = (type(got), got)
    return shape


async def test_a_driver_statement_belongs_to_the_unit_of_works_transaction(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]],
) -> None:
    plain, _, _ = engines
    factory = SqlUnitOfWorkFactory(plain)
    task = await _saved_task(factory)
    rolled_back, kept = _queued(task), _queued(task)
    async with factory() as uow:
        assert await uow.runs.add_new_many([rolled_back]) == {rolled_back.id}
        connection = (await uow.connection.get_raw_connection()).driver_connection
        assert connection is not None
        assert connection.is_in_transaction()
        assert await uow.runs.get(rolled_back.id) is not None  # its own write, seen
        await uow.rollback()
        assert await uow.runs.add_new_many([kept]) == {kept.id}
        await uow.commit()
    async with factory.reads() as uow:
        assert await uow.runs.get(rolled_back.id) is None
        assert await uow.runs.get(kept.id) is not None
        connection = (await uow.connection.get_raw_connection()).driver_connection
        assert connection is not None
        assert not connection.is_in_transaction()
    # Left open without a commit: nothing stays.
    lost = _queued(task)
    async with factory() as uow:
        await uow.runs.add_new_many([lost])
    async with factory.reads() as uow:
        assert await uow.runs.get(lost.id) is None


async def test_a_driver_statements_errors_are_the_applications(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]],
) -> None:
    plain, _, _ = engines
    factory = SqlUnitOfWorkFactory(plain)
    user = User(
        username=f"driver-{new_id()[-8:]}",
        password_hash="x",
        role=Role.USER,
        created_at=T0,
        updated_at=T0,
    )
    async with factory() as uow:
        await uow.users.add(user)
        await uow.commit()
    copy = driver.prebuilt_text(
        "INSERT INTO users (id, username, password_hash, role, disabled, created_at,"
        " updated_at) SELECT :new_id, username, password_hash, role, disabled, created_at,"
        " updated_at FROM users WHERE id = :id"
    )
    async with factory() as uow:
        with pytest.raises(AlreadyExists) as raised:
            async with translated("user"):
                await driver.fetch(uow.connection, copy, {"new_id": new_id(), "id": user.id})
    assert raised.value.field == "username"

    # A naive instant is refused before it is sent, as SQLAlchemy's bind processor refuses it.
    async with factory() as uow:
        with pytest.raises(ValueError, match="naive"):
            await uow.runs.start_many(["any"], worker_id="w", now=datetime(2026, 1, 1), lease=LEASE)


async def test_a_dropped_connection_is_unavailable_and_the_next_unit_of_work_works(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]], postgres_engine: AsyncEngine
) -> None:
    plain, _, _ = engines
    factory = SqlUnitOfWorkFactory(plain)
    pid_of = driver.prebuilt_text("SELECT pg_backend_pid() AS pid")
    async with factory() as uow:
        [row] = await driver.fetch(uow.connection, pid_of, {})
        async with postgres_engine.connect() as admin:
            await admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(row['pid'])})")
        with pytest.raises(Unavailable):
            async with translated():
                await uow.runs.get("any")
    async with factory.reads() as uow:
        assert await uow.runs.get("any") is None


async def test_through_sqlalchemy_rows_answer_by_name_and_by_position(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]],
) -> None:
    plain, listened, _ = engines
    statement = driver.prebuilt_text("SELECT 7 AS seven, 'x' AS ex")
    for engine in (plain, listened):
        async with engine.connect() as connection:
            [row] = await driver.fetch(connection, statement, {})
        assert (row["seven"], row[0], row["ex"], row[1], tuple(row)) == (7, 7, "x", "x", (7, "x"))


def test_a_result_asyncpg_would_not_convert_as_sqlalchemy_does_is_refused() -> None:
    dialect = asyncpg_dialect.dialect()
    decimal = driver.Prebuilt(select(cast(literal(1), Numeric(10, 2)).label("money")))
    with pytest.raises(ValueError, match="money"):
        decimal.compiled(dialect)

    def fine() -> object:
        return driver.Prebuilt(select(literal(1).label("n"))).compiled(dialect)

    assert fine() is not None


def _sqlalchemy_commits(monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine) -> list[str]:
    """Note every commit that goes through SQLAlchemy's ``AsyncConnection.commit`` on
    ``engine``'s pool."""
    used: list[str] = []
    commit = AsyncConnection.commit

    async def noting(self: AsyncConnection) -> None:
        if self.engine.pool is engine.pool:
            used.append("commit")
        await commit(self)

    monkeypatch.setattr(AsyncConnection, "commit", noting)
    return used


async def test_a_unit_of_works_commit_is_the_drivers_and_sqlalchemy_agrees(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, listened, seen = engines
    on_plain = _sqlalchemy_commits(monkeypatch, plain)
    on_listened = _sqlalchemy_commits(monkeypatch, listened)
    task = _task()
    async with SqlUnitOfWorkFactory(plain)() as uow:
        await uow.tasks.add(task)
        first, second = _queued(task), _queued(task)
        await uow.runs.add_new_many([first])
        await uow.commit()
        connection = (await uow.connection.get_raw_connection()).driver_connection
        assert connection is not None
        assert not connection.is_in_transaction()
        assert not uow.connection.in_transaction()
        # The next statement begins a fresh transaction, which a rollback undoes.
        await uow.runs.add_new_many([second])
        assert connection.is_in_transaction()
        await uow.rollback()
        # A commit with nothing begun is nothing.
        await uow.commit()
    assert on_plain == []
    async with SqlUnitOfWorkFactory(plain).reads() as uow:
        assert await uow.runs.get(first.id) is not None
        assert await uow.runs.get(second.id) is None
    # Under tracing (somebody listens to the statements) the commit is SQLAlchemy's.
    traced = _queued(task)
    async with SqlUnitOfWorkFactory(listened)() as uow:
        await uow.runs.add_new_many([traced])
        await uow.commit()
    assert on_listened == ["commit"]
    assert any("INSERT INTO task_runs" in statement for statement in seen)
    async with SqlUnitOfWorkFactory(plain).reads() as uow:
        assert await uow.runs.get(traced.id) is not None


async def test_a_commit_the_database_refuses_is_the_applications_error_and_keeps_nothing(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]], postgres_engine: AsyncEngine
) -> None:
    """A deferred constraint is checked at ``COMMIT``: its violation comes back as the
    application's error, the unit of work leaves cleanly and its connection serves the
    next one."""
    plain, _, _ = engines
    table = f"driver_commit_{new_id()[-8:]}"
    async with postgres_engine.begin() as admin:
        await admin.exec_driver_sql(
            f"CREATE TABLE {table} (k int, CONSTRAINT {table}_k UNIQUE (k)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
    insert = driver.prebuilt_text(f"INSERT INTO {table} (k) VALUES (:k)")
    count = driver.prebuilt_text(f"SELECT count(*) AS n FROM {table}")
    factory = SqlUnitOfWorkFactory(plain)
    try:
        async with factory() as uow:
            await driver.fetch(uow.connection, insert, {"k": 1})
            await driver.fetch(uow.connection, insert, {"k": 1})  # accepted until COMMIT
            with pytest.raises(AlreadyExists):
                await uow.commit()
            assert uow.connection.in_transaction()  # SQLAlchemy's, rolled back on leaving
        for _ in range(3):  # every pooled connection is usable
            async with factory() as uow:
                await driver.fetch(uow.connection, insert, {"k": 2})
                await uow.commit()
                await driver.fetch(uow.connection, driver.prebuilt_text(f"DELETE FROM {table}"), {})
                await uow.commit()
        async with factory.reads() as uow:
            [row] = await driver.fetch(uow.connection, count, {})
            assert row["n"] == 0
    finally:
        async with postgres_engine.begin() as admin:
            await admin.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


async def test_a_commit_on_a_dropped_connection_is_unavailable_and_the_pool_recovers(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]], postgres_engine: AsyncEngine
) -> None:
    plain, _, _ = engines
    factory = SqlUnitOfWorkFactory(plain)
    task = await _saved_task(factory)
    lost = _queued(task)
    pid_of = driver.prebuilt_text("SELECT pg_backend_pid() AS pid")
    async with factory() as uow:
        await uow.runs.add_new_many([lost])
        [row] = await driver.fetch(uow.connection, pid_of, {})
        async with postgres_engine.connect() as admin:
            await admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(row['pid'])})")
        with pytest.raises(Unavailable) as raised:
            await uow.commit()
        # As SQLAlchemy does: the connection is invalidated, the pool will not hand it out.
        assert getattr(raised.value.__cause__, "connection_invalidated", None) is True
        assert uow.connection.invalidated
    kept = _queued(task)
    async with factory() as uow:
        await uow.runs.add_new_many([kept])
        await uow.commit()
    async with factory.reads() as uow:
        assert await uow.runs.get(lost.id) is None
        assert await uow.runs.get(kept.id) is not None


async def test_columns_null_in_every_run_of_a_batch_are_written_as_null(
    engines: tuple[AsyncEngine, AsyncEngine, list[str]],
) -> None:
    """The many-row statements send a column that is NULL in every run as one NULL array
    (``unnest`` pads it): those columns come back NULL, the others as written, whether the
    batch is all NULL there, mixed, or all set — on insert and on update."""
    plain, _, _ = engines
    factory = SqlUnitOfWorkFactory(plain)
    task = _task()
    later = T0 + timedelta(hours=1)
    runs = [_queued(task) for _ in range(3)]
    runs[0].not_before = later  # mixed: set in one run, NULL in the others
    for run in runs:
        run.params = None  # NULL in every run
        run.error = "set in every run"
    async with factory() as uow:
        await uow.tasks.add(task)
        assert await uow.runs.add_new_many(runs) == {run.id for run in runs}
        await uow.commit()
    async with factory.reads() as uow:
        read = [await uow.runs.get(run.id) for run in runs]
    assert [r.not_before if r else "gone" for r in read] == [later, None, None]
    assert [r.params if r else "gone" for r in read] == [None, None, None]
    assert [r.error if r else "gone" for r in read] == ["set in every run"] * 3
    # An update that clears a column in every run writes NULL over the values there.
    writes = []
    for run in runs:
        expected = run.version
        run.error = None
        run.params = {"now": "set"}
        run.version += 1
        writes.append((run, expected))
    async with factory() as uow:
        await uow.runs.update_many(writes, fields=("error", "params", "version"))
        await uow.commit()
    async with factory.reads() as uow:
        read = [await uow.runs.get(run.id) for run in runs]
    assert [r.error if r else "gone" for r in read] == [None, None, None]
    assert [r.params if r else "gone" for r in read] == [{"now": "set"}] * 3
    assert [r.not_before if r else "gone" for r in read] == [later, None, None]
