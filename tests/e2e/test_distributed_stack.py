"""The distributed mode: api, dispatcher and two workers as four processes on PostgreSQL with
each shared queue backend; every component stops cleanly on SIGTERM and nothing is lost
(issue 6)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest
from harness import Cluster, eventually

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("redis", marks=pytest.mark.redis),
        "postgres",
    ],
)
async def test_four_processes_run_triggered_work_and_stop_cleanly(
    backend: str, cluster_factory: Any
) -> None:
    cluster: Cluster = cluster_factory(backend)
    api, client = await cluster.api()
    dispatcher = cluster.dispatcher()
    workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]

    task = await client.post(
        "/api/v1/tasks",
        json={"name": "distributed", "executor": "shell", "params": {"argv": ["echo", "ok"]}},
    )
    assert task.status_code == 201, task.text
    task_id = task.json()["id"]
    run_ids = []
    for _ in range(30):
        response = await client.post(f"/api/v1/tasks/{task_id}/trigger")
        assert response.status_code == 201, response.text
        run_ids.append(response.json()["id"])

    async def all_succeeded() -> bool:
        statuses = [
            (await client.get(f"/api/v1/runs/{run_id}")).json()["status"] for run_id in run_ids
        ]
        return all(status == "succeeded" for status in statuses)

    await eventually(all_succeeded, timeout=90, interval=0.5)
    output = await client.get(f"/api/v1/runs/{run_ids[0]}/output")
    assert "ok" in output.text
    workers_seen = {
        (await client.get(f"/api/v1/runs/{run_id}")).json()["worker_id"] for run_id in run_ids
    }
    assert workers_seen  # at least one worker ran them; both are registered:
    listed = (await client.get("/api/v1/workers")).json()
    names = {w["name"] for w in (listed["items"] if isinstance(listed, dict) else listed)}
    assert {"worker-1", "worker-2"} <= names

    # SIGTERM each component in the operator's order; each exits 0 on its own.
    for process in (api, *workers, dispatcher):
        process.signal(signal.SIGTERM)
        assert await process.wait(45) == 0, process.output()[-3000:]
    await asyncio.sleep(0)
