"""Claims under real contention: every queued run goes to exactly one worker.

PostgreSQL is the case that matters (row locks, ``SKIP LOCKED``); SQLite runs the same race to
prove that its writers wait for one another rather than fail."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.tables import task_runs, tasks
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

pytestmark = pytest.mark.timeout(120)

RUNS = 1_000
CLAIMERS = 20
T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def contended_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared PostgreSQL database, or a fresh SQLite file (where BEGIN IMMEDIATE makes the
    claimers queue for the write lock instead of failing with "database is locked")."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'contended.db'}"


@pytest.fixture
async def contended(contended_url: str) -> AsyncIterator[SqlUnitOfWorkFactory]:
    """A pool wide enough for every claimer to hold its own connection at once."""
    if contended_url.startswith("sqlite"):
        await asyncio.to_thread(upgrade, contended_url)
    engine: AsyncEngine = create_engine(contended_url, pool_size=CLAIMERS + 5)
    try:
        yield SqlUnitOfWorkFactory(engine)
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(tasks))  # runs go with their task
        await engine.dispose()


async def queue_runs(uow_factory: SqlUnitOfWorkFactory, count: int) -> list[str]:
    task = Task(owner_id="owner", name="contended", executor="noop", created_at=T0, updated_at=T0)
    runs = [
        TaskRun(
            task_id=task.id,
            owner_id=task.owner_id,
            trigger=RunTrigger.MANUAL,
            scheduled_for=T0 + timedelta(microseconds=i),
            created_at=T0 + timedelta(microseconds=i),
            status=RunStatus.QUEUED,
            queued_at=T0,
            priority=i % 10,
        )
        for i in range(count)
    ]
    async with uow_factory() as uow:
        await uow.tasks.add(task)
        for run in runs:
            await uow.runs.add(run)
        await uow.commit()
    return [run.id for run in runs]


async def test_concurrent_claim_next_hands_every_run_to_exactly_one_worker(
    contended: SqlUnitOfWorkFactory, contended_url: str
) -> None:
    all_ids = await queue_runs(contended, RUNS)
    start = asyncio.Barrier(CLAIMERS)

    async def claimer(worker_id: str) -> list[str]:
        claimed: list[str] = []
        async with contended() as uow:
            await start.wait()
            while True:
                run = await uow.runs.claim_next(
                    queues=["default"], worker_id=worker_id, now=T0, lease=LEASE
                )
                await uow.commit()
                if run is None:
                    return claimed
                assert run.status is RunStatus.RUNNING
                assert run.worker_id == worker_id
                claimed.append(run.id)

    began = time.perf_counter()
    results = await asyncio.gather(*(claimer(f"w-{i}") for i in range(CLAIMERS)))
    elapsed = time.perf_counter() - began
    backend = contended_url.split("+", 1)[0]
    print(f"\n{backend}: {CLAIMERS} claimers took {RUNS} runs in {elapsed:.2f} s")

    claimed = [run_id for batch in results for run_id in batch]
    duplicates = [run_id for run_id, n in Counter(claimed).items() if n > 1]
    assert duplicates == []
    assert len(claimed) == RUNS
    assert set(claimed) == set(all_ids)
    assert sum(1 for batch in results if batch) > 1, "the claimers did not actually compete"

    owner_of = {run_id: f"w-{i}" for i, batch in enumerate(results) for run_id in batch}
    columns = select(task_runs.c.id, task_runs.c.status, task_runs.c.worker_id)
    async with contended.engine.connect() as connection:
        rows = (await connection.execute(columns)).all()
    assert len(rows) == RUNS
    for run_id, status, worker_id in rows:
        assert status == RunStatus.RUNNING.value
        assert worker_id == owner_of[run_id]


async def test_racing_claims_of_one_run_have_exactly_one_winner(
    contended: SqlUnitOfWorkFactory, contended_url: str
) -> None:
    (run_id,) = await queue_runs(contended, 1)
    sqlite = contended_url.startswith("sqlite")
    start = asyncio.Barrier(CLAIMERS)

    async def claim(worker_id: str) -> TaskRun | None:
        async with contended() as uow:
            if not sqlite:
                # Transactions open before the race. (Not on SQLite: there a transaction holds
                # the database's one write lock, so the others could not reach the barrier.)
                await uow.runs.get(run_id)
            await start.wait()
            won = await uow.runs.claim(run_id, worker_id=worker_id, now=T0, lease=LEASE)
            await uow.commit()
            return won

    outcomes = await asyncio.gather(*(claim(f"w-{i}") for i in range(CLAIMERS)))
    winners = [run for run in outcomes if run is not None]
    assert len(winners) == 1
    (winner,) = winners
    async with contended() as uow:
        stored = await uow.runs.get(run_id)
    assert stored == winner
    assert stored is not None
    assert stored.version == 2
    assert stored.status is RunStatus.RUNNING


async def test_overlapping_batched_claims_hand_every_run_to_exactly_one_worker(
    contended: SqlUnitOfWorkFactory,
) -> None:
    """Workers claiming overlapping batches (duplicate deliveries, in any order) never deadlock
    and never both win a run: the claim locks rows in id order and re-checks the status."""
    all_ids = await queue_runs(contended, 300)
    start = asyncio.Barrier(CLAIMERS)

    async def claimer(index: int) -> list[str]:
        # Each claimer sees a shifted, reversed window of the runs: every run is asked for by
        # several claimers, in different orders.
        window = (all_ids[index * 15 :] + all_ids[: index * 15])[:60][::-1]
        claimed: list[str] = []
        async with contended() as uow:
            await start.wait()
            for offset in range(0, len(window), 20):
                runs = await uow.runs.claim_many(
                    window[offset : offset + 20], worker_id=f"w-{index}", now=T0, lease=LEASE
                )
                await uow.commit()
                assert all(run.status is RunStatus.RUNNING for run in runs)
                assert [run.id for run in runs] == sorted(run.id for run in runs)
                claimed.extend(run.id for run in runs)
        return claimed

    results = await asyncio.gather(*(claimer(i) for i in range(CLAIMERS)))
    claimed = [run_id for batch in results for run_id in batch]
    assert [run_id for run_id, n in Counter(claimed).items() if n > 1] == []
    assert set(claimed) == set(all_ids)
    async with contended.engine.connect() as connection:
        versions = (await connection.execute(select(task_runs.c.version))).scalars().all()
    assert set(versions) == {2}
