"""Many runs through real processes: each executes exactly once with its whole history, also
while PostgreSQL connections are being terminated (issue 3)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from harness import Cluster, admin_execute, eventually
from scenario import Scenario
from sqlalchemy.engine import make_url

from scheduler_domain.status import RunStatus

pytestmark = [pytest.mark.postgres]

FULL_HISTORY = [
    (None, RunStatus.PENDING),
    (RunStatus.PENDING, RunStatus.QUEUED),
    (RunStatus.QUEUED, RunStatus.RUNNING),
    (RunStatus.RUNNING, RunStatus.SUCCEEDED),
]


@pytest.fixture
def scenario(uow_factory: Any, tmp_path: Any) -> Scenario:
    return Scenario(uow_factory=uow_factory, workdir=tmp_path)


async def _assert_each_succeeded_once_with_history(scenario: Scenario, expected: int) -> None:
    runs = await scenario.all_runs()
    assert len(runs) == expected
    assert Counter(r.status for r in runs) == {RunStatus.SUCCEEDED: expected}
    async with scenario.uow_factory() as uow:
        for run in runs:
            history = [(e.from_status, e.to_status) for e in await uow.events.list_for_run(run.id)]
            assert history == FULL_HISTORY, (run.id, history)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "backend",
    [
        "postgres",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
async def test_thousand_runs_three_workers_two_dispatchers_each_once(
    backend: str, cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory(backend)
    for name in ("w1", "w2", "w3"):
        cluster.worker(name, SCHEDULER__WORKER__CAPACITY="8")
    cluster.dispatcher("d1")
    cluster.dispatcher("d2")
    task_ids = [await scenario.noop_task(f"bulk-{i}") for i in range(10)]
    total = 1000
    await asyncio.gather(
        *(_trigger_many(scenario, task_ids[i % 10], total // 10) for i in range(10))
    )

    async def done() -> bool:
        runs = await scenario.all_runs()
        return sum(r.status is RunStatus.SUCCEEDED for r in runs) >= total

    await eventually(done, timeout=180, interval=0.5)
    await asyncio.sleep(1)
    await _assert_each_succeeded_once_with_history(scenario, total)
    # Work was shared: every worker took part.
    per_worker = Counter(r.worker_id for r in await scenario.all_runs())
    assert len(per_worker) == 3


async def _trigger_many(scenario: Scenario, task_id: str, count: int) -> None:
    for _ in range(count):
        await scenario.trigger(task_id)


@pytest.mark.timeout(180)
async def test_terminated_postgres_connections_lose_and_duplicate_nothing(
    cluster_factory: Any, scenario: Scenario, database_url: str
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    cluster.worker("w1", SCHEDULER__WORKER__CAPACITY="8")
    cluster.worker("w2", SCHEDULER__WORKER__CAPACITY="8")
    cluster.dispatcher()
    task_id = await scenario.ledger_task("under-fire", seconds=0.05)
    name = make_url(database_url).database
    total = 300

    async def terminate_backends() -> None:
        for _ in range(4):
            await asyncio.sleep(1.0)
            await admin_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )

    async def trigger_all() -> list[str]:
        ids = []
        for _ in range(total):
            for attempt in range(20):
                try:
                    ids.append((await scenario.trigger(task_id)).id)
                    break
                except Exception:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.01)
        return ids

    _ids, _ = await asyncio.gather(trigger_all(), terminate_backends())

    async def done() -> bool:
        runs = await scenario.runs_of(task_id)
        return sum(r.status is RunStatus.SUCCEEDED for r in runs) >= total

    await eventually(done, timeout=150, interval=0.5)
    runs = await scenario.runs_of(task_id)
    succeeded = [r for r in runs if r.status is RunStatus.SUCCEEDED]
    assert len(succeeded) == total
    _starts, ends = scenario.ledger_counts()
    # Each run id was executed (ended) by a healthy worker exactly once.
    assert all(ends[r.id] == 1 for r in succeeded)
    assert all(count == 1 for count in ends.values())
    async with scenario.uow_factory() as uow:
        for run in succeeded:
            claims = [
                e for e in await uow.events.list_for_run(run.id) if e.to_status is RunStatus.RUNNING
            ]
            assert len(claims) == 1
