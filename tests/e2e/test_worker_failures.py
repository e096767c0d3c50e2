"""Workers that crash, freeze or are told to stop: nothing accepted is lost, nothing is
recorded twice (issue 3, real processes on PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from harness import Cluster, eventually
from scenario import Scenario

from scheduler_domain.status import RunStatus

pytestmark = [pytest.mark.timeout(120), pytest.mark.postgres]


@pytest.fixture
def scenario(uow_factory: Any, tmp_path: Any) -> Scenario:
    return Scenario(uow_factory=uow_factory, workdir=tmp_path)


async def _wait_running(scenario: Scenario, run_id: str) -> str:
    async def holder() -> str | None:
        run = await scenario.get(run_id)
        if run.status is RunStatus.RUNNING:
            return await scenario.worker_name_of(run_id)
        return None

    name: str = await eventually(holder, timeout=30)
    return name


async def test_kill_9_of_a_worker_mid_run_loses_the_attempt_and_the_retry_completes(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    workers = {name: cluster.worker(name) for name in ("worker-a", "worker-b")}
    cluster.dispatcher()
    task_id = await scenario.ledger_task(
        "crashy", seconds=4, retry={"max_attempts": 3, "base_delay_seconds": 0.1}
    )
    first = await scenario.trigger(task_id)
    victim = await _wait_running(scenario, first.id)
    workers[victim].signal(signal.SIGKILL)
    survivor = next(name for name in workers if name != victim)

    async def retried() -> bool:
        runs = await scenario.runs_of(task_id)
        return len(runs) == 2 and runs[1].status is RunStatus.SUCCEEDED

    await eventually(retried, timeout=60)
    runs = await scenario.runs_of(task_id)
    assert runs[0].status is RunStatus.LOST
    assert runs[0].error == "lease expired"
    assert await scenario.worker_name_of(runs[1].id) == survivor
    events = [(e.from_status, e.to_status) for e in await scenario.events(runs[0].id)]
    assert events[-1] == (RunStatus.RUNNING, RunStatus.LOST)
    async with scenario.uow_factory() as uow:
        running = [r for r in await scenario.all_runs() if r.status is RunStatus.RUNNING]
        assert running == []
        del uow


async def test_frozen_worker_comes_back_to_a_stale_token(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    frozen = cluster.worker("worker-frozen")
    cluster.dispatcher()
    task_id = await scenario.ledger_task(
        "freezable", seconds=1.5, retry={"max_attempts": 2, "base_delay_seconds": 0.1}
    )
    first = await scenario.trigger(task_id)
    assert await _wait_running(scenario, first.id) == "worker-frozen"
    frozen.signal(signal.SIGSTOP)
    try:
        cluster.worker("worker-healthy")

        async def replaced() -> bool:
            runs = await scenario.runs_of(task_id)
            return len(runs) == 2 and runs[1].status is RunStatus.SUCCEEDED

        await eventually(replaced, timeout=60)
    finally:
        frozen.signal(signal.SIGCONT)

    async def refused() -> bool:
        return "refused" in frozen.output() or "stopping run" in frozen.output()

    await eventually(refused, timeout=20)
    await asyncio.sleep(1)
    runs = await scenario.runs_of(task_id)
    assert runs[0].status is RunStatus.LOST  # the late outcome did not overwrite it
    assert runs[1].status is RunStatus.SUCCEEDED
    assert await scenario.worker_name_of(runs[1].id) == "worker-healthy"
    assert len(runs) == 2


async def test_sigterm_drains_in_flight_runs_and_deregisters(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    worker = cluster.worker("worker-draining")
    cluster.dispatcher()
    task_id = await scenario.ledger_task("drainable", seconds=2)
    runs = [await scenario.trigger(task_id) for _ in range(3)]

    async def all_running() -> bool:
        statuses = [(await scenario.get(r.id)).status for r in runs]
        return all(status is RunStatus.RUNNING for status in statuses)

    await eventually(all_running, timeout=30)
    worker.signal(signal.SIGTERM)
    assert await worker.wait(30) == 0
    for run in runs:
        assert (await scenario.get(run.id)).status is RunStatus.SUCCEEDED
    _starts, ends = scenario.ledger_counts()
    assert all(ends[r.id] == 1 for r in runs)
    async with scenario.uow_factory() as uow:
        workers = await uow.workers.list()
    assert [w.status.value for w in workers] == ["offline"]
    assert "draining" in worker.output()
