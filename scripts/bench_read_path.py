"""One primary-key read of ``task_runs``, in a loop, through our unit of work and through
asyncpg alone: what a statement costs the calling process.

Creates a fresh PostgreSQL database (migrated), then for 1 and 16 concurrent readers, each for
``--seconds``, on uvloop:

* ``reads``: ``SqlUnitOfWorkFactory.reads`` (autocommit) and ``uow.runs.get`` (on PostgreSQL
  a prebuilt statement run by asyncpg on the unit of work's connection: ``persistence/driver``);
* ``transaction``: the transactional unit of work (``BEGIN`` … ``ROLLBACK``) and the same read;
* ``sqlalchemy``: ``reads`` on an engine with an execution listener, which sends every
  statement through SQLAlchemy's execution path (as tracing does);
* ``asyncpg``: asyncpg's own pool and ``fetchrow`` of the same statement.

Prints reads/s per path and concurrency, and the load average. Usage:
``uv run python scripts/bench_read_path.py [--seconds 4]``; needs PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable

import asyncpg
import uvloop
from sqlalchemy import event
from sqlalchemy.engine import make_url

from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

ADMIN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STATEMENT = "SELECT * FROM task_runs WHERE id = $1"


async def _rate(read: Callable[[], Awaitable[object]], concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def reader() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await read()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(reader() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def _measure(dsn: str, url: str, seconds: float) -> None:
    engine = create_engine(url, pool_size=10)
    factory = SqlUnitOfWorkFactory(engine)
    # An engine somebody listens to (as OpenTelemetry's instrumentation does) runs every
    # statement through SQLAlchemy: the path the hot statements took before the driver path.
    listened = create_engine(url, pool_size=10)
    event.listen(listened.sync_engine, "before_cursor_execute", lambda *_: None)
    through_sqlalchemy = SqlUnitOfWorkFactory(listened)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=20)

    async def through(make: Callable[[], object]) -> None:
        async with make() as uow:  # type: ignore[attr-defined]
            await uow.runs.get("no-such-run")

    async def raw() -> None:
        async with pool.acquire() as connection:
            await connection.fetchrow(STATEMENT, "no-such-run")

    paths: dict[str, Callable[[], Awaitable[object]]] = {
        "reads": lambda: through(factory.reads),
        "transaction": lambda: through(factory),
        "sqlalchemy": lambda: through(through_sqlalchemy.reads),
        "asyncpg": raw,
    }
    try:
        for name, read in paths.items():
            await _rate(read, 16, 1.0)  # warm: connections, prepared statements
            for concurrency in (1, 16):
                rate = await _rate(read, concurrency, seconds)
                print(f"{name:12} {concurrency:3} at a time: {rate:8,.0f} reads/s", flush=True)
    finally:
        await pool.close()
        await engine.dispose()
        await listened.dispose()


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    name = "bench_read_" + secrets.token_hex(4)
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    dsn = make_url(ADMIN).set(database=name).render_as_string(hide_password=False)
    url = make_url(dsn).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    try:
        upgrade(url)
        print(f"load average before: {os.getloadavg()}")
        uvloop.run(_measure(dsn, url, args.seconds))
        print(f"load average after: {os.getloadavg()}")
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
