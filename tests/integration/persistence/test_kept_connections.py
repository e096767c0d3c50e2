"""Read and statement units of work keep a few connections between them (``kept_connections``):
the next one takes a kept connection instead of a pool round — and never one the server
closed, one a failed or cancelled unit of work left, more than the pool can spare, or after
the process gave them back. Real PostgreSQL; the pool's own counts say what is checked out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from integration.observability.observed_stack import stack_settings
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.kept_connections import (
    ConnectionShelf,
    keep_connections,
    release_kept_connections,
)
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.resources import open_resources

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

PID = text("SELECT pg_backend_pid()")


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """Pool of 10 (pool_size 5, kept as twice that): at most 2 kept for the whole engine."""
    engine = create_engine(postgres_url, pool_size=5)
    keep_connections(engine)
    try:
        yield engine
    finally:
        await release_kept_connections(engine)
        await engine.dispose()


def _checked_out(engine: AsyncEngine) -> int:
    pool: Any = engine.sync_engine.pool
    return int(pool.checkedout())


async def _read_pid(factory: SqlUnitOfWorkFactory) -> int:
    async with factory.reads() as uow:
        return int((await uow.connection.execute(PID)).scalar_one())


async def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_the_next_read_takes_the_connection_the_last_one_kept(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    first = await _read_pid(factory)
    assert _checked_out(engine) == 1  # kept, not given back
    second = await _read_pid(factory)
    assert second == first
    assert _checked_out(engine) == 1


async def test_statement_units_keep_theirs_too(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    pid = select(func.pg_backend_pid())  # a plain read: what a statement unit may run
    async with factory.statements() as uow:
        first = (await uow.connection.execute(pid)).scalar_one()
    async with factory.statements() as uow:
        second = (await uow.connection.execute(pid)).scalar_one()
    assert second == first
    assert _checked_out(engine) == 1


async def test_an_engine_that_does_not_keep_gives_every_connection_back(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=5)
    try:
        await _read_pid(SqlUnitOfWorkFactory(engine))
        assert _checked_out(engine) == 0
    finally:
        await engine.dispose()


async def test_a_transaction_never_keeps_its_connection(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    async with factory() as uow:
        await uow.connection.execute(PID)
        await uow.commit()
    assert _checked_out(engine) == 0


async def test_a_unit_of_work_left_by_an_exception_gives_its_connection_back(
    engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(engine)

    async def failing() -> None:
        async with factory.reads() as uow:
            await uow.connection.execute(PID)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await failing()
    assert _checked_out(engine) == 0


async def test_a_cancelled_unit_of_work_gives_its_connection_back_and_the_next_one_works(
    engine: AsyncEngine,
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    started = asyncio.Event()

    async def slow() -> None:
        async with factory.reads() as uow:
            started.set()
            await uow.connection.execute(text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(slow())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.05)  # let the statement reach the server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _checked_out(engine) == 0  # the pool has it (and resets it), not the shelf
    assert await _read_pid(factory) > 0


async def test_a_connection_the_server_closed_is_never_handed_out(
    engine: AsyncEngine, postgres_url: str
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    kept = await _read_pid(factory)
    other = create_engine(postgres_url, pool_size=1)
    try:
        async with other.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": kept})
    finally:
        await other.dispose()
    shelf = factory._read_shelf
    assert shelf is not None
    # asyncpg sees the end of the socket when the loop reads it.
    raw: Any = None

    def closed() -> bool:
        nonlocal raw
        connection = shelf._free[0][0]
        raw = connection.sync_connection.connection.dbapi_connection._connection  # type: ignore[union-attr]
        return bool(raw.is_closed())

    await _wait_until(closed)
    reused = shelf.reused
    assert await _read_pid(factory) != kept  # a working connection, not the dead one
    assert shelf.reused == reused


async def test_kept_connections_are_few_and_leave_the_pool_room(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    # Eight reads at once, then all end: at most a fifth of the pool's 10 is kept.
    gate = asyncio.Event()
    entered = 0

    async def read() -> None:
        nonlocal entered
        async with factory.reads() as uow:
            await uow.connection.execute(PID)
            entered += 1
            await gate.wait()

    readers = [asyncio.create_task(read()) for _ in range(8)]
    await _wait_until(lambda: entered == 8)
    gate.set()
    await asyncio.gather(*readers)
    assert _checked_out(engine) == 2

    # With the pool full but for the kept ones, a read that ends gives its connection back.
    await release_kept_connections(engine)
    keep_connections(engine)
    factory = SqlUnitOfWorkFactory(engine)
    held = [await engine.connect() for _ in range(9)]
    try:
        await _read_pid(factory)
        assert _checked_out(engine) == 9
    finally:
        for connection in held:
            await connection.close()


async def test_a_connection_kept_longer_than_its_age_goes_back_to_the_pool(
    engine: AsyncEngine,
) -> None:
    now = [0.0]
    read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    shelf = ConnectionShelf(read_engine, max_age=60.0, monotonic=lambda: now[0])
    connection = await shelf.take()
    await shelf.put(connection, clean=True)
    assert len(shelf) == 1
    now[0] = 61.0
    fresh = await shelf.take()  # the old one went back; this is a new checkout
    assert shelf.reused == 0
    assert fresh is not connection
    await shelf.put(fresh, clean=True)
    assert len(shelf) == 1  # kept again, its age counted from now
    await shelf.aclose()
    assert _checked_out(engine) == 0


async def test_released_connections_go_back_and_none_is_kept_after(engine: AsyncEngine) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    await _read_pid(factory)
    assert _checked_out(engine) == 1
    await release_kept_connections(engine)
    assert _checked_out(engine) == 0
    await _read_pid(factory)
    assert _checked_out(engine) == 0


async def test_open_resources_gives_the_kept_connections_back_before_disposing(
    postgres_url: str,
) -> None:
    async with open_resources(stack_settings(postgres_url)) as resources:
        pool: Any = resources.engine.sync_engine.pool
        assert pool.checkedout() == 0
        async with resources.uow_factory.reads() as uow:  # type: ignore[attr-defined]
            await uow.connection.execute(PID)
        async with resources.uow_factory.reads() as uow:  # type: ignore[attr-defined]
            await uow.connection.execute(PID)
        assert pool.checkedout() == 1
        shelf = resources.uow_factory._read_shelf  # type: ignore[attr-defined]
        kept = shelf._free[0][0]
        assert not kept.closed
    # Given back to the pool (closed as a SQLAlchemy connection) before the pool went away.
    assert kept.closed
    assert len(shelf) == 0


async def test_a_connection_the_server_closed_during_a_unit_of_work_is_not_kept(
    engine: AsyncEngine, postgres_url: str
) -> None:
    factory = SqlUnitOfWorkFactory(engine)
    shelf = factory._read_shelf
    assert shelf is not None
    other = create_engine(postgres_url, pool_size=1)
    try:
        async with factory.reads() as uow:
            pid = (await uow.connection.execute(PID)).scalar_one()
            async with other.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            raw: Any = uow.connection.sync_connection.connection.dbapi_connection._connection  # type: ignore[union-attr]
            await _wait_until(raw.is_closed)
    finally:
        await other.dispose()
    assert len(shelf) == 0
    assert await _read_pid(factory) != pid


async def test_a_lent_connection_comes_back_only_from_a_block_that_ran_to_its_end(
    engine: AsyncEngine,
) -> None:
    shelf = ConnectionShelf(engine.execution_options(isolation_level="AUTOCOMMIT"))
    async with shelf.lend() as connection:
        await connection.execute(PID)
    assert len(shelf) == 1

    async def failing() -> None:
        async with shelf.lend() as lent:
            await lent.execute(PID)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await failing()
    assert len(shelf) == 0
    await shelf.aclose()
    assert _checked_out(engine) == 0
