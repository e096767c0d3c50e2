"""The distributed mode: api, dispatcher and two workers as four processes on PostgreSQL with
each shared queue backend; every component stops cleanly on SIGTERM and nothing is lost
(issue 6)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from typing import Any

import httpx
import pytest
from harness import BIN, Cluster, eventually

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]
SECRET = "e2e-jwt-secret-" + "x" * 40
ADMIN_PASSWORD = "e2e-admin-password-1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    port = _free_port()
    cluster.extra_env.update(
        SCHEDULER__API__JWT_SECRET=SECRET,
        SCHEDULER__API__PORT=str(port),
        SCHEDULER_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    created = subprocess.run(  # noqa: S603 - our own CLI
        [str(BIN / "scheduler"), "create-admin"],
        env=cluster.env(),
        cwd=cluster.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    api = cluster.start("scheduler-api", "api")
    dispatcher = cluster.dispatcher()
    workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]
    base = f"http://127.0.0.1:{port}"

    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=60, interval=0.25)
        login = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
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
                (await client.get(f"/api/v1/runs/{run_id}")).json()["status"]
                for run_id in run_ids
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
