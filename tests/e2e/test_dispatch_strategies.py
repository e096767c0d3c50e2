"""Dispatch strategies with three live ``scheduler-worker`` processes (issue 4).

The queue backend is PostgreSQL: routing (``scheduler_application.dispatch.routing``, called by the
relay) only chooses the name of the queue a run is published to — the task's queue or a worker's
direct queue ``worker.<id>`` — and is the same code for every backend; the direct queues
themselves are covered per backend by the queue contract tests.

Where a run was sent is read from the run itself (its ``queue`` is the direct queue it was
published to) and where it ran from its ``worker_id``; both are checked.
"""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import pytest
from harness import Cluster, eventually
from scenario import OWNER, TASK_PYTHON, Scenario

from scheduler_application.dispatch.routing import DIRECT_QUEUE_PREFIX
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import Worker, WorkerStatus

pytestmark = [pytest.mark.postgres]

#: name -> labels. ``pool`` on two workers, ``gpu`` on one; ``a``/``b`` pin the sleepers.
WORKERS = {"w1": "pool,a", "w2": "pool,b", "w3": "gpu"}
CAPACITY = 4


@pytest.fixture
def scenario(uow_factory: Any, tmp_path: Any) -> Scenario:
    return Scenario(uow_factory=uow_factory, workdir=tmp_path)


async def _start(cluster: Cluster, scenario: Scenario) -> dict[str, Worker]:
    """A dispatcher and the three workers; returns the workers by name once all are online."""
    for name, labels in WORKERS.items():
        cluster.worker(
            name, SCHEDULER__WORKER__LABELS=labels, SCHEDULER__WORKER__CAPACITY=str(CAPACITY)
        )
    cluster.dispatcher()

    async def online() -> dict[str, Worker] | None:
        workers = await _workers(scenario)
        if set(workers) == set(WORKERS) and all(
            w.status is WorkerStatus.ONLINE for w in workers.values()
        ):
            return workers
        return None

    found: dict[str, Worker] = await eventually(online, timeout=60, interval=0.2)
    return found


async def _workers(scenario: Scenario) -> dict[str, Worker]:
    async with scenario.uow_factory() as uow:
        return {w.name: w for w in await uow.workers.list()}


async def _trigger(scenario: Scenario, task_id: str, count: int) -> list[str]:
    return [(await scenario.trigger(task_id)).id for _ in range(count)]


async def _succeeded(scenario: Scenario, run_ids: list[str]) -> list[TaskRun]:
    async def done() -> list[TaskRun] | None:
        runs = [await scenario.get(run_id) for run_id in run_ids]
        if all(run.status is RunStatus.SUCCEEDED for run in runs):
            return runs
        assert not any(run.status.is_final for run in runs if run.status is not RunStatus.SUCCEEDED)
        return None

    runs: list[TaskRun] = await eventually(done, timeout=60, interval=0.2)
    return runs


def _placement(runs: list[TaskRun], workers: dict[str, Worker]) -> Counter[str]:
    """Runs per worker name; each run must have run on the worker whose queue it was sent to."""
    name_of = {w.id: name for name, w in workers.items()}
    placed: Counter[str] = Counter()
    for run in runs:
        assert run.queue.startswith(DIRECT_QUEUE_PREFIX), run.queue
        routed = name_of[run.queue.removeprefix(DIRECT_QUEUE_PREFIX)]
        assert run.worker_id is not None
        assert name_of[run.worker_id] == routed, (run.id, run.queue, run.worker_id)
        placed[routed] += 1
    return placed


@pytest.mark.timeout(120)
async def test_round_robin_least_loaded_random_and_labels_route_over_three_live_workers(
    cluster_factory: Any, scenario: Scenario
) -> None:
    cluster: Cluster = cluster_factory("postgres")
    workers = await _start(cluster, scenario)

    # round_robin: the least recently assigned eligible worker, in turn: 30 runs, 10 each.
    task = await scenario.noop_task("spread", strategy="round_robin")
    runs = await _succeeded(scenario, await _trigger(scenario, task, 30))
    assert _placement(runs, workers) == {"w1": 10, "w2": 10, "w3": 10}

    # random: only among the eligible (``pool``: w1 and w2), and not always the same one.
    task = await scenario.noop_task("pooled", strategy="random", labels=["pool"])
    runs = await _succeeded(scenario, await _trigger(scenario, task, 30))
    placed = _placement(runs, workers)
    assert set(placed) == {"w1", "w2"}, placed

    # A label only one worker has: every run goes there, whatever the targeted strategy.
    for strategy in ("round_robin", "least_loaded", "random"):
        task = await scenario.noop_task(f"gpu-{strategy}", strategy=strategy, labels=["gpu"])
        runs = await _succeeded(scenario, await _trigger(scenario, task, 6))
        assert _placement(runs, workers) == {"w3": 6}, strategy

    # least_loaded: w1 and w2 full of sleeping shell runs (pinned by their labels); once their
    # heartbeats say so, new runs go to the idle w3 — as many as it has free slots.
    sleepers: list[str] = []
    await scenario.ensure_owner()
    for label in ("a", "b"):
        sleeper = await scenario.tasks.create(
            {
                "name": f"sleeper-{label}",
                "executor": "shell",
                "params": {"argv": [TASK_PYTHON, "-c", "import time; time.sleep(30)"]},
                "strategy": "least_loaded",
                "labels": [label],
            },
            principal=OWNER,
        )
        sleepers += await _trigger(scenario, sleeper.id, CAPACITY)

    async def busy() -> bool:
        current = await _workers(scenario)
        return current["w1"].active_runs == current["w2"].active_runs == CAPACITY

    await eventually(busy, timeout=30, interval=0.2)
    task = await scenario.noop_task("light", strategy="least_loaded")
    runs = await _succeeded(scenario, await _trigger(scenario, task, CAPACITY))
    assert _placement(runs, workers) == {"w3": CAPACITY}
    for run_id in sleepers:
        assert (await scenario.get(run_id)).status is RunStatus.RUNNING
        await scenario.runs.cancel(run_id, principal=OWNER)


@pytest.mark.timeout(120)
async def test_runs_waiting_on_a_killed_workers_direct_queue_are_redispatched_and_complete(
    cluster_factory: Any, scenario: Scenario
) -> None:
    """w1 is stopped (SIGSTOP) before runs are routed to it, so they wait on its direct queue
    unconsumed; it is then killed with kill -9. Once it has been silent for the liveness
    timeout (``worker.offline_after_seconds``, 10 s here: 30 by default) the dispatcher marks
    it offline and routes those runs again, to live workers, where each runs exactly once."""
    cluster: Cluster = cluster_factory("postgres")
    cluster.extra_env["SCHEDULER__WORKER__OFFLINE_AFTER_SECONDS"] = "10"
    workers = await _start(cluster, scenario)
    victim = next(p for p in cluster.processes if p.name == "w1")
    task = await scenario.ledger_task("rerouted", seconds=0.05, strategy="round_robin")
    victim.signal(signal.SIGSTOP)
    run_ids = await _trigger(scenario, task, 6)
    stranded_queue = workers["w1"].direct_queue

    async def routed() -> list[TaskRun] | None:
        runs = [await scenario.get(run_id) for run_id in run_ids]
        stranded = [r for r in runs if r.queue == stranded_queue]
        others = [r for r in runs if r.queue != stranded_queue]
        if len(stranded) == 2 and all(r.status is RunStatus.SUCCEEDED for r in others):
            return stranded
        return None

    stranded: list[TaskRun] = await eventually(routed, timeout=30, interval=0.2)
    assert all(r.status is RunStatus.QUEUED for r in stranded)
    victim.signal(signal.SIGKILL)
    await victim.wait(10)

    runs = await _succeeded(scenario, [r.id for r in stranded])
    name_of = {w.id: name for name, w in workers.items()}
    assert {name_of[r.worker_id] for r in runs if r.worker_id} <= {"w2", "w3"}
    assert all(r.queue != stranded_queue for r in runs)
    for run in runs:
        moves = [
            e
            for e in await scenario.events(run.id)
            if e.from_status is RunStatus.QUEUED and e.to_status is RunStatus.QUEUED
        ]
        assert [(m.detail["reason"], m.detail["from_queue"]) for m in moves] == [
            ("worker unavailable", stranded_queue)
        ]
        assert moves[0].detail["strategy"] == "round_robin"
    _, ends = scenario.ledger_counts()
    assert all(ends[run_id] == 1 for run_id in run_ids), ends
    # Routing judges a worker by its silence; the liveness loop marks it offline on its next
    # pass (every reaper interval), which may come after the rerouted runs finished.

    async def marked_offline() -> bool:
        return (await _workers(scenario))["w1"].status is WorkerStatus.OFFLINE

    assert await eventually(marked_offline, timeout=30, interval=0.2)
