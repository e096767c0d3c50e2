"""The main API flows on PostgreSQL (the rest of the suite runs on SQLite)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from api_harness import PASSWORD, Api, running_api, wipe
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_api(postgres_engine: AsyncEngine) -> AsyncIterator[Api]:
    async with running_api(postgres_engine) as harness:
        yield harness
    await wipe(postgres_engine)


async def test_main_flows_on_postgres(pg_api: Api) -> None:
    api = pg_api
    admin = await api.user("root", Role.ADMIN)
    alice = await api.user("alice", Role.USER)
    worker = await api.user("fleet", Role.WORKER)

    task = await api.task(
        alice, "nightly", schedule={"cron": "0 2 * * *", "timezone": "Europe/Berlin"}
    )
    first = await api.run(alice, task["id"], **{"Idempotency-Key": "k1"})
    again = await api.client.post(
        f"/api/v1/tasks/{task['id']}/trigger",
        headers={**alice.headers, "Idempotency-Key": "k1"},
    )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]

    registered = await api.client.post(
        "/api/v1/worker/register",
        json={"name": "w", "hostname": "h", "pid": 1, "queues": ["default"], "capacity": 1},
        headers=worker.headers,
    )
    worker_id = registered.json()["id"]
    claimed = await api.client.post(
        "/api/v1/worker/claim?wait=1", json={"worker_id": worker_id}, headers=worker.headers
    )
    assert claimed.status_code == 200, claimed.text
    done = await api.client.post(
        f"/api/v1/worker/runs/{first['id']}/complete",
        json={
            "worker_id": worker_id,
            "token": claimed.json()["token"],
            "status": "succeeded",
            "result": {"exit_code": 0},
            "output": "hi\n",
        },
        headers=worker.headers,
    )
    assert done.status_code == 200, done.text

    output = await api.client.get(f"/api/v1/runs/{first['id']}/output", headers=alice.headers)
    assert output.json()["output"] == "hi\n"
    listed = await api.client.get(
        "/api/v1/runs", params={"status": "succeeded", "limit": 1000000}, headers=alice.headers
    )
    assert [r["id"] for r in listed.json()["items"]] == [first["id"]]
    queues = await api.client.get("/api/v1/queues", headers=admin.headers)
    default = next(q for q in queues.json()["items"] if q["name"] == "default")
    assert default["finished"] == 1
    assert default["created"] == 1

    rotated = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    reused = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    after = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
    )
    assert (rotated.status_code, reused.status_code, after.status_code) == (200, 401, 401)

    key = await api.client.post("/api/v1/api-keys", json={"name": "ci"}, headers=alice.headers)
    assert (
        await api.client.get("/api/v1/tasks", headers={"X-API-Key": key.json()["key"]})
    ).status_code == 200

    reset = await api.client.post(
        f"/api/v1/users/{alice.id}/reset-password",
        json={"password": PASSWORD + "!"},
        headers=admin.headers,
    )
    assert reset.status_code == 204
    bob = await api.client.get(f"/api/v1/tasks/{task['id']}", headers=admin.headers)
    assert bob.status_code == 200


async def test_postgres_survives_hostile_strings(pg_api: Api) -> None:
    api = pg_api
    alice = await api.user("alice", Role.USER)

    nul = await api.client.post(
        "/api/v1/tasks",
        content=b'{"name": "x", "executor": "noop", "params": {"sleep_seconds": 0}, '
        b'"description": "\\u0000"}',
        headers={**alice.headers, "content-type": "application/json"},
    )
    long_id = await api.client.get("/api/v1/tasks/" + "9" * 5000, headers=alice.headers)
    huge_int = await api.client.get("/api/v1/runs", params={"limit": 10**30}, headers=alice.headers)
    far_time = await api.client.get(
        "/api/v1/runs", params={"created_after": "9999-12-31T23:59:59-14:00"},
        headers=alice.headers,
    )  # fmt: skip

    forged = base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+14:00", "x"]').decode()
    cursor = await api.client.get("/api/v1/runs", params={"cursor": forged}, headers=alice.headers)

    assert cursor.status_code == 422
    assert nul.status_code == 422
    assert long_id.status_code == 422  # ids are at most 64 characters
    assert huge_int.status_code == 200
    assert far_time.status_code in (200, 422)
