"""``/api/v1/worker``: register, long-poll claim, heartbeat and complete over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from api_harness import Api, Caller

from scheduler_domain.accounts import Role

REGISTER = {"name": "remote", "hostname": "box", "pid": 42, "queues": ["default"], "capacity": 2}


async def register(api: Api, worker: Caller, **overrides: Any) -> str:
    response = await api.client.post(
        "/api/v1/worker/register", json={**REGISTER, **overrides}, headers=worker.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def claim(api: Api, worker: Caller, worker_id: str, wait: float = 0) -> Any:
    return await api.client.post(
        f"/api/v1/worker/claim?wait={wait}", json={"worker_id": worker_id}, headers=worker.headers
    )


@pytest.fixture
async def worker(api: Api) -> Caller:
    return await api.user("worker-1", Role.WORKER)


async def test_claim_returns_the_run_with_lease_and_token(
    api: Api, alice: Caller, worker: Caller
) -> None:
    worker_id = await register(api, worker)
    task = await api.task(alice, params={"sleep_seconds": 0.1}, timeout_seconds=30)
    run = await api.run(alice, task["id"])

    response = await claim(api, worker, worker_id)

    body = response.json()
    assert response.status_code == 200
    assert body["run"]["id"] == run["id"]
    assert body["run"]["status"] == "running"
    assert body["run"]["worker_id"] == worker_id
    assert body["token"] == body["run"]["version"]
    assert body["lease_expires_at"] is not None
    assert body["executor"] == "noop"
    assert body["params"] == {"sleep_seconds": 0.1}
    assert body["timeout_seconds"] == 30


async def test_claim_without_work_answers_204_after_waiting(api: Api, worker: Caller) -> None:
    worker_id = await register(api, worker)

    started = time.monotonic()
    response = await claim(api, worker, worker_id, wait=0.5)

    assert response.status_code == 204
    assert time.monotonic() - started >= 0.45


async def test_long_poll_picks_up_a_run_triggered_while_waiting(
    api: Api, alice: Caller, worker: Caller
) -> None:
    worker_id = await register(api, worker)
    task = await api.task(alice)

    waiting = asyncio.create_task(claim(api, worker, worker_id, wait=5))
    await asyncio.sleep(0.3)
    run = await api.run(alice, task["id"])
    response = await waiting

    assert response.status_code == 200
    assert response.json()["run"]["id"] == run["id"]


async def test_wait_is_bounded(api: Api, worker: Caller) -> None:
    worker_id = await register(api, worker)
    response = await claim(api, worker, worker_id, wait=3600)

    assert response.status_code == 422
    assert response.json()["field"] == "wait"


async def test_draining_worker_gets_no_work(
    api: Api, admin: Caller, alice: Caller, worker: Caller
) -> None:
    worker_id = await register(api, worker)
    task = await api.task(alice)
    await api.run(alice, task["id"])

    drained = await api.client.post(f"/api/v1/workers/{worker_id}/drain", headers=admin.headers)
    response = await claim(api, worker, worker_id)

    assert drained.json()["status"] == "draining"
    assert response.status_code == 204


async def test_heartbeat_renews_and_reports_lost_leases(
    api: Api, alice: Caller, worker: Caller
) -> None:
    worker_id = await register(api, worker)
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    claimed = (await claim(api, worker, worker_id)).json()
    held = {"run_id": run["id"], "token": claimed["token"]}

    renewed = await api.client.post(
        "/api/v1/worker/heartbeat", json={"worker_id": worker_id, "runs": [held]},
        headers=worker.headers,
    )  # fmt: skip
    await api.client.post(f"/api/v1/runs/{run['id']}/cancel", headers=alice.headers)
    lost = await api.client.post(
        "/api/v1/worker/heartbeat", json={"worker_id": worker_id, "runs": [held]},
        headers=worker.headers,
    )  # fmt: skip
    stale = await api.client.post(
        "/api/v1/worker/heartbeat",
        json={"worker_id": worker_id, "runs": [{**held, "token": claimed["token"] - 1}]},
        headers=worker.headers,
    )

    assert renewed.status_code == 200
    assert renewed.json() == {"status": "online", "renewed": [run["id"]]}
    assert lost.status_code == 409
    assert lost.json()["stop"] == [run["id"]]
    assert stale.status_code == 409


async def test_complete_is_refused_to_a_non_holder_and_a_stale_token(
    api: Api, alice: Caller, worker: Caller
) -> None:
    holder = await register(api, worker)
    other = await register(api, worker, name="other")
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    token = (await claim(api, worker, holder)).json()["token"]
    url = f"/api/v1/worker/runs/{run['id']}/complete"

    wrong_worker = await api.client.post(
        url, json={"worker_id": other, "token": token, "status": "succeeded"},
        headers=worker.headers,
    )  # fmt: skip
    wrong_token = await api.client.post(
        url, json={"worker_id": holder, "token": token + 5, "status": "succeeded"},
        headers=worker.headers,
    )  # fmt: skip
    right = await api.client.post(
        url, json={"worker_id": holder, "token": token, "status": "succeeded"},
        headers=worker.headers,
    )  # fmt: skip
    twice = await api.client.post(
        url, json={"worker_id": holder, "token": token, "status": "succeeded"},
        headers=worker.headers,
    )  # fmt: skip

    assert wrong_worker.status_code == 409
    assert wrong_worker.json()["field"] == "worker_id"
    assert wrong_token.status_code == 409
    assert wrong_token.json()["field"] == "token"
    assert right.status_code == 200
    assert twice.status_code == 409


async def test_outcome_status_must_be_an_outcome(api: Api, alice: Caller, worker: Caller) -> None:
    holder = await register(api, worker)
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    token = (await claim(api, worker, holder)).json()["token"]

    response = await api.client.post(
        f"/api/v1/worker/runs/{run['id']}/complete",
        json={"worker_id": holder, "token": token, "status": "cancelled"},
        headers=worker.headers,
    )

    assert response.status_code == 422
    assert response.json()["field"] == "status"


async def test_output_with_nul_characters_is_scrubbed_not_refused(
    api: Api, alice: Caller, worker: Caller
) -> None:
    holder = await register(api, worker)
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    token = (await claim(api, worker, holder)).json()["token"]

    response = await api.client.post(
        f"/api/v1/worker/runs/{run['id']}/complete",
        json={"worker_id": holder, "token": token, "status": "failed", "output": "a\u0000b"},
        headers=worker.headers,
    )
    output = await api.client.get(f"/api/v1/runs/{run['id']}/output", headers=alice.headers)

    assert response.status_code == 200
    assert output.json()["output"] == "a\ufffdb"


async def test_release_retries_at_once_and_deregister_goes_offline(
    api: Api, alice: Caller, worker: Caller
) -> None:
    holder = await register(api, worker)
    task = await api.task(alice, retry={"max_attempts": 3})
    run = await api.run(alice, task["id"])
    token = (await claim(api, worker, holder)).json()["token"]

    released = await api.client.post(
        f"/api/v1/worker/runs/{run['id']}/release",
        json={"worker_id": holder, "token": token},
        headers=worker.headers,
    )
    gone = await api.client.post(
        "/api/v1/worker/deregister", json={"worker_id": holder}, headers=worker.headers
    )

    assert released.status_code == 200
    assert released.json()["run"]["status"] == "lost"
    assert released.json()["retry"]["attempt"] == 2
    assert gone.json()["status"] == "offline"


async def test_unknown_worker_is_not_found(api: Api, worker: Caller) -> None:
    response = await claim(api, worker, "01900000-0000-7000-8000-000000000000")

    assert response.status_code == 404


@pytest.mark.parametrize("role", [Role.USER, Role.VIEWER, Role.OPERATOR])
async def test_only_workers_and_admins_speak_the_protocol(api: Api, role: Role) -> None:
    caller = await api.user(f"someone-{role.value}", role)

    response = await api.client.post(
        "/api/v1/worker/register", json=REGISTER, headers=caller.headers
    )

    assert response.status_code == 403


async def test_admin_may_speak_the_protocol(api: Api, admin: Caller) -> None:
    assert await register(api, admin)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/workers"),
        ("GET", "/api/v1/queues"),
        ("GET", "/api/v1/system"),
        ("GET", "/api/v1/api-keys"),
        ("GET", "/api/v1/users"),
    ],
)
async def test_worker_role_may_use_nothing_else(
    api: Api, worker: Caller, method: str, path: str
) -> None:
    response = await api.client.request(method, path, headers=worker.headers)

    assert response.status_code == 403
