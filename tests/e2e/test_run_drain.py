"""Draining the in-process worker of ``scheduler run`` pauses that worker only: it stays
registered and alive, the API and the dispatcher go on, and undrain resumes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from embedded import ADMIN_PASSWORD, Embedded, embedded
from harness import eventually

pytestmark = pytest.mark.timeout(120)


async def test_draining_the_embedded_worker_pauses_it_and_undrain_resumes_it(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path) as server:
        admin = await server.login("admin", ADMIN_PASSWORD)
        workers = (await server.client.get("/api/v1/workers", headers=admin)).json()["items"]
        (worker,) = [w for w in workers if w["status"] == "online"]

        drained = await server.client.post(f"/api/v1/workers/{worker['id']}/drain", headers=admin)
        assert drained.status_code == 200, drained.text
        await eventually(lambda: _logged(server, "drained by an operator"), timeout=30)

        # The API still answers and the dispatcher still fires: a task due every second gets
        # its runs, which wait (queued) while the worker is drained.
        assert server.process.poll() is None
        assert (await server.client.get("/health")).status_code == 200
        task = await server.client.post(
            "/api/v1/tasks",
            headers=admin,
            json={"name": "ticking", "executor": "noop", "schedule": {"interval_seconds": 1}},
        )
        assert task.status_code == 201, task.text

        async def runs() -> list[dict[str, object]]:
            page = await server.client.get(
                f"/api/v1/runs?task_id={task.json()['id']}", headers=admin
            )
            return list(page.json()["items"])

        async def fired() -> bool:
            return len(await runs()) >= 2

        await eventually(fired, timeout=30, interval=0.25)
        assert {r["status"] for r in await runs()} <= {"pending", "queued"}
        # Still registered and heartbeating, as draining; nothing stopped.
        again = await server.client.get(f"/api/v1/workers/{worker['id']}", headers=admin)
        assert again.json()["status"] == "draining"
        assert "the worker stopped" not in server.logs()

        undrained = await server.client.post(
            f"/api/v1/workers/{worker['id']}/undrain", headers=admin
        )
        assert undrained.status_code == 200, undrained.text

        async def ran() -> bool:
            return any(r["status"] == "succeeded" for r in await runs())

        await eventually(ran, timeout=30, interval=0.25)

        assert await server.stop() == 0
        assert "received SIGTERM: shutting down" in server.logs()


async def _logged(server: Embedded, text: str) -> bool:
    return text in server.logs()
