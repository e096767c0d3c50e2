"""Draining the in-process worker of ``scheduler run`` stops that worker only."""

from __future__ import annotations

from pathlib import Path

import pytest
from embedded import ADMIN_PASSWORD, Embedded, embedded
from harness import eventually

pytestmark = pytest.mark.timeout(120)


async def test_draining_the_embedded_worker_leaves_the_api_and_dispatcher_serving(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path) as server:
        admin = await server.login("admin", ADMIN_PASSWORD)
        workers = (await server.client.get("/api/v1/workers", headers=admin)).json()["items"]
        (worker,) = [w for w in workers if w["status"] == "online"]

        drained = await server.client.post(f"/api/v1/workers/{worker['id']}/drain", headers=admin)
        assert drained.status_code in (200, 202), drained.text
        await eventually(lambda: _logged(server, "stopped (drained)"), timeout=30)

        # The API still answers and the dispatcher still fires: a task due every second gets
        # its runs (queued: nothing takes them any more).
        assert server.process.poll() is None
        assert (await server.client.get("/health")).status_code == 200
        task = await server.client.post(
            "/api/v1/tasks",
            headers=admin,
            json={"name": "ticking", "executor": "noop", "schedule": {"interval_seconds": 1}},
        )
        assert task.status_code == 201, task.text

        async def fired() -> bool:
            runs = await server.client.get(
                f"/api/v1/runs?task_id={task.json()['id']}", headers=admin
            )
            return len(runs.json()["items"]) >= 2

        await eventually(fired, timeout=30, interval=0.25)

        assert await server.stop() == 0
        assert "received SIGTERM: shutting down" in server.logs()


async def _logged(server: Embedded, text: str) -> bool:
    return text in server.logs()
