"""The event log's cursor under concurrent committers: many writers with overlapping
transactions that commit (or roll back) in random order after random delays, several readers
polling with the cursor meanwhile. Every committed event is seen exactly once by every reader,
in one and the same order; nothing rolled back is ever seen.

PostgreSQL is the case that matters (a later-numbered row can commit first: a reader that
followed ``seq`` alone would pass over the earlier one still in flight); SQLite runs the same
race to show its single writer keeps ``seq`` in commit order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.events.log import record_event
from scheduler_application.ports.repositories import EventQuery
from scheduler_domain.events import LOG_START, EventCursor, EventRecord, RunEvent
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.tables import run_events, tasks
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(180)

WRITERS = 12
TRANSACTIONS = 12
READERS = 3
T0 = datetime(2030, 1, 1, tzinfo=UTC)
#: The ``fresh_postgres_database`` fixture: makes an empty database, returns its URL.
DatabaseMaker = Callable[[], Awaitable[str]]


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
async def log_uow(log_url: str) -> AsyncIterator[SqlUnitOfWorkFactory]:
    if log_url.startswith("sqlite"):
        await asyncio.to_thread(upgrade, log_url)
    engine: AsyncEngine = create_engine(log_url, pool_size=WRITERS + READERS + 5)
    try:
        yield SqlUnitOfWorkFactory(engine)
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(run_events))
            await connection.execute(delete(tasks))
        await engine.dispose()


async def seed_run(uow_factory: SqlUnitOfWorkFactory, owner: str = "owner") -> TaskRun:
    task = Task(owner_id=owner, name=f"t-{owner}", executor="noop", created_at=T0, updated_at=T0)
    run = TaskRun(
        task_id=task.id,
        owner_id=owner,
        attempt=1,
        trigger=RunTrigger.MANUAL,
        scheduled_for=T0,
        created_at=T0,
        queue="default",
    )
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        await uow.runs.add(run)
        await uow.commit()
    return run


async def test_cursor_sees_every_committed_event_once_in_one_order(
    log_uow: SqlUnitOfWorkFactory, log_url: str
) -> None:
    postgres = log_url.startswith("postgres")
    run = await seed_run(log_uow)
    rng = random.Random(16)
    committed: set[str] = set()
    rolled_back: set[str] = set()
    writers_done = asyncio.Event()
    # SQLite holds its one write lock for a whole transaction: keep its delays short.
    pause = 0.02 if postgres else 0.002

    async def writer(number: int) -> None:
        for n in range(TRANSACTIONS):
            ids: list[str] = []
            async with log_uow() as uow:
                for part in range(rng.randint(1, 3)):
                    if part % 2 == 0:
                        record = await record_event(
                            uow,
                            "test.written",
                            at=T0,
                            actor=f"writer:{number}",
                            detail={"n": n},
                        )
                        ids.append(record.id)
                    else:
                        event = RunEvent(
                            run_id=run.id,
                            task_id=run.task_id,
                            from_status=RunStatus.RUNNING,
                            to_status=RunStatus.RUNNING,
                            at=T0,
                            actor=f"writer:{number}",
                        )
                        await uow.events.add(event)
                        ids.append(event.id)
                    await asyncio.sleep(rng.random() * pause)
                if rng.random() < 0.15:
                    await uow.rollback()
                    rolled_back.update(ids)
                    continue
                await uow.commit()
                committed.update(ids)

    async def reader() -> list[tuple[EventCursor, str]]:
        seen: list[tuple[EventCursor, str]] = []
        cursor = LOG_START
        local = random.Random(id(seen))
        while True:
            finished = writers_done.is_set()
            async with log_uow() as uow:
                page = await uow.events.read_log(
                    EventQuery(after=cursor), limit=local.randint(1, 25)
                )
            seen.extend((event.cursor, event.id) for event in page)
            if page:
                cursor = page[-1].cursor
            elif finished:
                return seen
            else:
                await asyncio.sleep(local.random() * 0.01)

    readers = [asyncio.create_task(reader()) for _ in range(READERS)]
    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    writers_done.set()
    results = await asyncio.gather(*readers)

    assert committed, "the writers committed nothing"
    for seen in results:
        cursors = [cursor for cursor, _ in seen]
        ids = [event_id for _, event_id in seen]
        assert cursors == sorted(cursors)
        assert len(set(cursors)) == len(cursors)
        assert len(ids) == len(set(ids)), "an event was served twice"
        assert set(ids) == committed, (
            f"missed {len(committed - set(ids))}, extra {len(set(ids) - committed)}"
        )
        assert not set(ids) & rolled_back
        assert ids == [event_id for _, event_id in results[0]], "readers disagree on the order"


async def test_a_transaction_in_flight_holds_back_the_entries_after_it(
    log_uow: SqlUnitOfWorkFactory, log_url: str
) -> None:
    """The precise rule: while an older transaction is open, a younger one's committed entry
    is not served yet (it would be passed over when the older one commits)."""
    if not log_url.startswith("postgres"):
        pytest.skip("SQLite has one writer at a time: there is no transaction in flight")
    async with log_uow() as older:
        first = await record_event(older, "test.older", at=T0, actor="a")
        async with log_uow() as younger:
            second = await record_event(younger, "test.younger", at=T0, actor="b")
            await younger.commit()
        async with log_uow() as uow:
            assert await uow.events.read_log(EventQuery(after=LOG_START), limit=10) == []
            assert await uow.events.log_head() == LOG_START
        await older.commit()
    async with log_uow() as uow:
        served = await uow.events.read_log(EventQuery(after=LOG_START), limit=10)
        head = await uow.events.log_head()
    assert [e.id for e in served] == [first.id, second.id]
    assert head == served[-1].cursor


async def test_filters_owner_scope_and_pruning(log_uow: SqlUnitOfWorkFactory) -> None:
    mine = await seed_run(log_uow, owner="alice")
    theirs = await seed_run(log_uow, owner="bob")
    async with log_uow() as uow:
        for run in (mine, theirs):
            await uow.events.add(
                RunEvent(
                    run_id=run.id,
                    task_id=run.task_id,
                    from_status=None,
                    to_status=RunStatus.PENDING,
                    at=T0,
                    actor="system",
                )
            )
        await uow.events.record(
            EventRecord(kind="task.deleted", at=T0, actor="user:alice", team_id="alice")
        )
        await uow.events.record(EventRecord(kind="queue.paused", at=T0, actor="admin"))
        await uow.events.record(
            EventRecord(kind="task.updated", at=T0 + timedelta(days=9), actor="x", team_id="bob")
        )
        await uow.commit()

    async def kinds(**query: object) -> list[str]:
        async with log_uow() as uow:
            page = await uow.events.read_log(EventQuery(after=LOG_START, **query), limit=50)  # type: ignore[arg-type]
        return [e.kind for e in page]

    # The horizon passes the commit once every older transaction of this database has ended;
    # at the instant one of another database ends, PostgreSQL may still list its xid as running
    # without a pg_stat_activity row to exclude it by: the log is then read a moment later,
    # never skipped. Wait for that, then read with each filter.
    async with asyncio.timeout(30):
        while len(await kinds()) < 5:
            await asyncio.sleep(0.05)
    assert await kinds() == [
        "run.pending",
        "run.pending",
        "task.deleted",
        "queue.paused",
        "task.updated",
    ]
    # A reader of team "alice" (seed_run's tasks are in their owner's personal team).
    assert await kinds(team_ids=frozenset({"alice"}), owner_id="alice") == [
        "run.pending",
        "task.deleted",
    ]
    assert await kinds(team_ids=frozenset({"bob"}), owner_id="bob") == [
        "run.pending",
        "task.updated",
    ]
    assert await kinds(team_ids=frozenset({"alice", "bob"})) == [
        "run.pending",
        "run.pending",
        "task.deleted",
        "task.updated",
    ]
    assert await kinds(run_id=theirs.id) == ["run.pending"]
    assert await kinds(statuses=(RunStatus.PENDING,)) == ["run.pending", "run.pending"]
    assert await kinds(kinds=("queue.paused", "run.pending")) == [
        "run.pending",
        "run.pending",
        "queue.paused",
    ]
    async with log_uow() as uow:
        pruned = await uow.events.prune(before=T0 + timedelta(days=1), limit=2)
        pruned += await uow.events.prune(before=T0 + timedelta(days=1), limit=2)
        await uow.commit()
    assert pruned == 4
    assert await kinds() == ["task.updated"]
    async with log_uow() as uow:  # the newest entry stays, whatever its age
        assert await uow.events.prune(before=T0 + timedelta(days=99), limit=10) == 0


async def test_a_transaction_in_another_database_does_not_hold_the_log_back(
    log_uow: SqlUnitOfWorkFactory, log_url: str, fresh_postgres_database: DatabaseMaker
) -> None:
    """Transaction ids are the cluster's; only this database's writers can come before."""
    if not log_url.startswith("postgres"):
        pytest.skip("PostgreSQL only")
    other = create_engine(await fresh_postgres_database(), pool_size=1)
    try:
        async with other.connect() as elsewhere:
            await elsewhere.execute(text("SELECT pg_current_xact_id()"))  # holds an id
            async with log_uow() as uow:
                record = await record_event(uow, "test.here", at=T0, actor="a")
                await uow.commit()
            async with log_uow() as uow:
                served = await uow.events.read_log(EventQuery(after=LOG_START), limit=10)
            await elsewhere.rollback()
    finally:
        await other.dispose()
    assert [e.id for e in served] == [record.id]


async def test_a_number_is_never_handed_out_again_after_the_newest_rows_go(
    log_uow: SqlUnitOfWorkFactory, log_url: str
) -> None:
    """A task's deletion takes its runs' events with it, maybe the newest rows of the log; the
    next entry must still come after every cursor already served (SQLite: AUTOINCREMENT)."""
    async with log_uow() as uow:
        for n in range(3):
            await record_event(uow, "test.before", at=T0, actor=str(n))
        await uow.commit()
    async with log_uow() as uow:
        served = await uow.events.read_log(EventQuery(after=LOG_START), limit=10)
    async with log_uow() as uow:
        await uow.events.prune(before=T0 + timedelta(days=1), limit=10)  # all but the newest
        await uow.commit()
    engine = create_engine(log_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(delete(run_events))  # and the newest, as a cascade would
    finally:
        await engine.dispose()
    async with log_uow() as uow:
        later = await record_event(uow, "test.after", at=T0, actor="x")
        await uow.commit()
    async with log_uow() as uow:
        after = await uow.events.read_log(EventQuery(after=served[-1].cursor), limit=10)
    assert [e.id for e in after] == [later.id]
