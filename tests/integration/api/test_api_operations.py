"""Workers, queues, system status, health and readiness."""

from __future__ import annotations

from typing import Any

from api_harness import Api, Caller, running_api
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.errors import Unavailable
from scheduler_domain.accounts import Role
from scheduler_infrastructure.queues.memory import MemoryRunQueue


async def register(api: Api, caller: Caller, name: str, queues: list[str]) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/worker/register",
        json={"name": name, "hostname": "h", "pid": 7, "queues": queues, "capacity": 3},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_workers_are_listed_paginated_and_filtered(api: Api, admin: Caller) -> None:
    for name in ("w-a", "w-b", "w-c"):
        await register(api, admin, name, ["default"])

    first = await api.client.get("/api/v1/workers?limit=2", headers=admin.headers)
    second = await api.client.get(
        "/api/v1/workers", params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=admin.headers,
    )  # fmt: skip
    online = await api.client.get("/api/v1/workers?status=online", headers=admin.headers)
    offline = await api.client.get("/api/v1/workers?status=offline", headers=admin.headers)

    assert [w["name"] for w in first.json()["items"]] == ["w-a", "w-b"]
    assert [w["name"] for w in second.json()["items"]] == ["w-c"]
    assert second.json()["next_cursor"] is None
    assert len(online.json()["items"]) == 3
    assert offline.json()["items"] == []


async def test_get_and_drain_a_worker(api: Api, admin: Caller) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    worker = await register(api, admin, "w", ["default"])

    fetched = await api.client.get(f"/api/v1/workers/{worker['id']}", headers=operator.headers)
    drained = await api.client.post(
        f"/api/v1/workers/{worker['id']}/drain", headers=operator.headers
    )
    missing = await api.client.get(
        "/api/v1/workers/01900000-0000-7000-8000-000000000000", headers=operator.headers
    )

    assert fetched.json()["capacity"] == 3
    assert drained.json()["status"] == "draining"
    assert missing.status_code == 404


async def test_undrain_lets_a_drained_worker_take_runs_and_refuses_an_offline_one(
    api: Api, admin: Caller
) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    worker = await register(api, admin, "w", ["default"])
    await api.client.post(f"/api/v1/workers/{worker['id']}/drain", headers=operator.headers)

    undrained = await api.client.post(
        f"/api/v1/workers/{worker['id']}/undrain", headers=operator.headers
    )
    gone = await api.client.post(
        "/api/v1/worker/deregister", json={"worker_id": worker["id"]}, headers=admin.headers
    )
    refused = await api.client.post(
        f"/api/v1/workers/{worker['id']}/undrain", headers=operator.headers
    )
    missing = await api.client.post(
        "/api/v1/workers/01900000-0000-7000-8000-000000000000/undrain", headers=operator.headers
    )

    assert undrained.status_code == 200, undrained.text
    assert undrained.json()["status"] == "online"
    assert gone.status_code in (200, 204), gone.text
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "worker_id"
    assert "offline" in refused.json()["detail"]
    assert missing.status_code == 404


async def test_queues_show_depth_and_rates(api: Api, admin: Caller, alice: Caller) -> None:
    task = await api.task(alice, queue="reports")
    await api.run(alice, task["id"])
    await register(api, admin, "w", ["default", "bulk"])

    response = await api.client.get("/api/v1/queues", headers=alice.headers)

    queues = {q["name"]: q for q in response.json()["items"]}
    assert set(queues) == {"reports", "default", "bulk"}
    assert queues["reports"]["depth"] == 1
    assert queues["reports"]["queued"] == 1
    assert queues["reports"]["created"] == 1
    assert queues["reports"]["created_per_minute"] == 1.0
    assert queues["reports"]["oldest_queued_at"] is not None
    assert queues["bulk"]["depth"] == 0
    assert queues["bulk"]["oldest_queued_at"] is None
    assert response.json()["window_seconds"] == 60


async def test_system_summarises_without_secrets(api: Api, admin: Caller, alice: Caller) -> None:
    as_admin = await api.client.get("/api/v1/system", headers=admin.headers)
    as_user = await api.client.get("/api/v1/system", headers=alice.headers)

    body = as_admin.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "queue": "ok"}
    assert body["version"]
    assert body["config"]["queue_backend"] == "memory"
    assert body["workers_by_status"] == {"online": 0, "draining": 0, "offline": 0}
    text = as_admin.text.lower()
    assert "secret" not in text
    assert "password" not in text
    assert "sqlite+" not in text
    assert as_user.json()["runs_by_status"] is None


async def test_health_and_readiness_need_no_credentials(api: Api) -> None:
    health = await api.client.get("/health")
    ready = await api.client.get("/ready")

    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "queue": "ok"}}


class UnreachableQueue(MemoryRunQueue):
    """A broker that does not answer."""

    async def depth(self, queue: str) -> int:
        raise Unavailable("connection refused")


async def test_readiness_names_what_is_down(clean_engine: AsyncEngine) -> None:
    async with running_api(clean_engine, queue=UnreachableQueue()) as api:
        ready = await api.client.get("/ready")

        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["queue"].startswith("unavailable")


async def test_openapi_document_and_viewers_are_served(api: Api) -> None:
    document = await api.client.get("/schema/openapi.json")
    swagger = await api.client.get("/schema/swagger")
    scalar = await api.client.get("/schema/scalar")

    assert document.status_code == 200
    assert document.json()["info"]["title"] == "Scheduler API"
    assert "/api/v1/tasks/{task_id}/trigger" in document.json()["paths"]
    assert swagger.status_code == 200
    assert "swagger" in swagger.text.lower()
    assert scalar.status_code == 200
