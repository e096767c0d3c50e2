"""Queues steered through the API of a running cluster (issue 16 point 3, issue 13 point 4):
the settings are changed after every process started, so each dispatcher (and the API's own
trigger path) must pick them up from the database.

- a rate limit set with ``PATCH /queues/{name}`` holds within 10 % across the API, two
  dispatchers and two workers (rate limiter in Redis, queue in PostgreSQL);
- a paused queue's runs wait while a worker keeps running another queue's, run on resume, and
  a purge cancels the waiting ones, each with its cancel event (PostgreSQL, Redis and RabbitMQ
  queues; and pause and resume in the embedded default, ``scheduler run`` on SQLite with the
  memory queue).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from embedded import ADMIN_PASSWORD, embedded
from harness import Cluster, eventually
from scenario import Scenario

from scheduler_application.accounts.access import Principal
from scheduler_domain.accounts import Role
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from services import REDIS_URL, probe, require

ADMIN = Principal(subject_id="e2e-admin", role=Role.ADMIN)
RATE = 10
WARM_UP = timedelta(seconds=3)
WINDOW = timedelta(seconds=8)
TRIGGERS = 150
TOLERANCE = 0.10


@pytest.fixture
def scenario(uow_factory: Any, tmp_path: Any) -> Scenario:
    return Scenario(uow_factory=uow_factory, workdir=tmp_path)


async def _runs_of(scenario: Scenario, task_id: str) -> list[TaskRun]:
    page = await scenario.runs.list(principal=ADMIN, task_id=task_id, limit=500)
    assert page.next_cursor is None
    return page.items


async def _task(client: httpx.AsyncClient, name: str, queue: str) -> str:
    created = await client.post(
        "/api/v1/tasks", json={"name": name, "executor": "noop", "queue": queue}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _trigger(client: httpx.AsyncClient, task_id: str, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 10):
        responses = await asyncio.gather(
            *(
                client.post(f"/api/v1/tasks/{task_id}/trigger")
                for _ in range(min(10, count - start))
            )
        )
        for response in responses:
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return ids


async def _statuses(scenario: Scenario, task_id: str) -> dict[str, RunStatus]:
    return {run.id: run.status for run in await _runs_of(scenario, task_id)}


async def _up(processes: list[Any]) -> None:
    async def all_up() -> bool:
        return all(
            "dispatcher started" in p.output() or "registered as" in p.output() for p in processes
        )

    await eventually(all_up, timeout=60, interval=0.2)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(150)
async def test_a_queue_rate_limit_set_through_the_api_holds_across_processes(
    cluster_factory: Any, scenario: Scenario
) -> None:
    require("Redis", await probe("redis"))
    queue = f"metered-{secrets.token_hex(4)}"
    cluster: Cluster = cluster_factory("postgres")
    cluster.extra_env["SCHEDULER__REDIS__URL"] = REDIS_URL
    _, client = await cluster.api()
    processes = [cluster.dispatcher("d1"), cluster.dispatcher("d2")]
    processes += [
        cluster.worker(f"w{i}", SCHEDULER__WORKER__QUEUES=queue, SCHEDULER__WORKER__CAPACITY="16")
        for i in (1, 2)
    ]
    await _up(processes)
    task_id = await _task(client, "metered", queue)

    limited = await client.patch(f"/api/v1/queues/{queue}", json={"rate_limit": f"{RATE}/s"})
    assert limited.status_code == 200, limited.text
    assert limited.json()["effective_rate_limit"] == f"{RATE}/s"

    ids = await _trigger(client, task_id, TRIGGERS)

    async def all_succeeded() -> bool:
        statuses = await _statuses(scenario, task_id)
        return all(statuses.get(i) is RunStatus.SUCCEEDED for i in ids)

    await eventually(all_succeeded, timeout=90, interval=0.5)
    queued = sorted(r.queued_at for r in await _runs_of(scenario, task_id) if r.queued_at)
    assert len(queued) == TRIGGERS
    start = queued[0] + WARM_UP
    end = start + WINDOW
    assert queued[-1] >= end, "the backlog ran out before the window closed"
    in_window = sum(1 for at in queued if start <= at < end)
    expected = RATE * WINDOW.total_seconds()
    print(f"queued in the {WINDOW.total_seconds():.0f} s window: {in_window} (expected {expected})")
    assert abs(in_window - expected) <= TOLERANCE * expected, (in_window, expected)
    for process in cluster.processes:
        assert process.alive(), process.name


@pytest.mark.postgres
@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "backend",
    [
        "postgres",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
async def test_pause_resume_and_purge_a_queue_of_a_running_cluster(
    cluster_factory: Any, scenario: Scenario, backend: str
) -> None:
    """The same steering whatever carries the runs: the database queue, a Redis stream or a
    RabbitMQ queue (a paused queue's runs are held before they reach the broker)."""
    if backend != "postgres":
        require(backend, await probe(backend))
    steered = f"steered-{secrets.token_hex(4)}"
    other = f"other-{secrets.token_hex(4)}"
    cluster: Cluster = cluster_factory(backend)
    _, client = await cluster.api()
    processes = [
        cluster.dispatcher("d1"),
        cluster.worker("w1", SCHEDULER__WORKER__QUEUES=f"{steered},{other}"),
    ]
    await _up(processes)
    held_task = await _task(client, "held", steered)
    free_task = await _task(client, "free", other)

    paused = await client.post(f"/api/v1/queues/{steered}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    held = await _trigger(client, held_task, 5)
    # The worker keeps taking the other queue's runs meanwhile: once these (triggered after)
    # have run, the dispatcher and the worker have had every chance to take the held ones.
    free = await _trigger(client, free_task, 5)

    async def free_done() -> bool:
        statuses = await _statuses(scenario, free_task)
        return all(statuses.get(i) is RunStatus.SUCCEEDED for i in free)

    await eventually(free_done, timeout=60, interval=0.2)
    waiting = await client.get(f"/api/v1/queues/{steered}")
    assert set((await _statuses(scenario, held_task)).values()) == {RunStatus.PENDING}
    assert waiting.json()["pending"] == 5

    resumed = await client.post(f"/api/v1/queues/{steered}/resume")
    assert resumed.json()["paused"] is False

    async def held_done() -> bool:
        statuses = await _statuses(scenario, held_task)
        return all(statuses.get(i) is RunStatus.SUCCEEDED for i in held)

    await eventually(held_done, timeout=60, interval=0.2)

    # Purge: paused again, three runs wait, a purge cancels them with their events.
    await client.post(f"/api/v1/queues/{steered}/pause")
    doomed = await _trigger(client, held_task, 3)
    purged = await client.post(f"/api/v1/queues/{steered}/purge")
    assert purged.json() == {"queue": steered, "cancelled": 3}
    statuses = await _statuses(scenario, held_task)
    for run_id in doomed:
        assert statuses[run_id] is RunStatus.CANCELLED
        events = await scenario.runs.events(run_id, principal=ADMIN)
        assert events[-1].to_status is RunStatus.CANCELLED
        assert events[-1].detail["reason"] == "queue purged"
    await client.post(f"/api/v1/queues/{steered}/resume")
    for process in cluster.processes:
        assert process.alive(), process.name
    logs = cluster.logs()
    assert "Traceback" not in logs
    assert f"queue {steered} changed by" in logs


@pytest.mark.timeout(120)
async def test_pause_and_resume_in_the_embedded_default(tmp_path: Path) -> None:
    """``scheduler run`` as shipped (SQLite, memory queue, api + dispatcher + worker in one
    process): the same pause and resume through its API."""
    async with embedded(tmp_path, SCHEDULER__WORKER__QUEUES="default,other") as server:
        admin = await server.login("admin", ADMIN_PASSWORD)
        client = server.client
        client.headers.update(admin)
        held_task = await _task(client, "held", "default")
        free_task = await _task(client, "free", "other")

        paused = await client.post("/api/v1/queues/default/pause")
        assert paused.json()["paused"] is True
        held = await _trigger(client, held_task, 3)
        free = await _trigger(client, free_task, 3)

        async def statuses(task_id: str) -> dict[str, str]:
            page = await client.get("/api/v1/runs", params={"task_id": task_id})
            return {run["id"]: run["status"] for run in page.json()["items"]}

        async def done(task_id: str, ids: list[str]) -> bool:
            now = await statuses(task_id)
            return all(now.get(i) == "succeeded" for i in ids)

        await eventually(lambda: done(free_task, free), timeout=60, interval=0.2)
        assert set((await statuses(held_task)).values()) == {"pending"}

        await client.post("/api/v1/queues/default/resume")
        await eventually(lambda: done(held_task, held), timeout=60, interval=0.2)
        assert await server.stop() == 0
