"""``secret_env`` over HTTP: written, never read back by anyone (names only), refused without a
key or with names a process environment cannot hold, and handed to a worker credential alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from api_harness import Api, Caller, running_api, wipe
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_domain.accounts import Role
from scheduler_infrastructure.security.secret_box import FernetSecretBox, generate_key

SECRET = "api-secret-" + "Vb81Kq0s"
SHELL = {"executor": "shell", "params": {"argv": ["true"]}}


@pytest.fixture
async def keyed(sqlite_engine: AsyncEngine) -> AsyncIterator[Api]:
    # The deployer lets users run shell tasks, the executor secrets are for.
    async with running_api(
        sqlite_engine,
        secret_box=FernetSecretBox(keys=[generate_key()]),
        executor_policy=OPEN_EXECUTOR_POLICY,
    ) as harness:
        yield harness
    await wipe(sqlite_engine)


async def _create(api: Api, caller: Caller, **fields: object) -> dict[str, object]:
    body = {"name": "deploy", **SHELL, "secret_env": {"TOKEN": SECRET}, **fields}
    response = await api.client.post("/api/v1/tasks", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text
    assert SECRET not in response.text
    return dict(response.json())


async def test_no_endpoint_returns_a_secret_value_not_even_to_an_admin(keyed: Api) -> None:
    alice = await keyed.user("alice", Role.USER)
    admin = await keyed.user("root", Role.ADMIN)
    operator = await keyed.user("olga", Role.OPERATOR)
    created = await _create(keyed, alice)
    assert created["secret_env_names"] == ["TOKEN"]
    assert "secret_env" not in created
    task_id = created["id"]

    patched = await keyed.client.patch(
        f"/api/v1/tasks/{task_id}",
        json={"secret_env": {"OTHER": SECRET + "-2"}},
        headers=alice.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["secret_env_names"] == ["OTHER", "TOKEN"]
    assert SECRET not in patched.text

    for caller in (alice, admin, operator):
        for path in (
            f"/api/v1/tasks/{task_id}",
            "/api/v1/tasks",
            f"/api/v1/tasks/{task_id}/schedule",
            f"/api/v1/tasks/{task_id}/dependencies",
        ):
            response = await keyed.client.get(path, headers=caller.headers)
            assert response.status_code == 200, (path, response.text)
            assert SECRET not in response.text, path
            assert "sealed" not in response.text
        listed = await keyed.client.get("/api/v1/tasks", headers=caller.headers)
        assert listed.json()["items"][0]["secret_env_names"] == ["OTHER", "TOKEN"]

    removed = await keyed.client.patch(
        f"/api/v1/tasks/{task_id}", json={"secret_env": {"OTHER": None}}, headers=admin.headers
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["secret_env_names"] == ["TOKEN"]


async def test_without_a_key_secret_env_is_refused_naming_the_field(
    api: Api, alice: Caller
) -> None:
    response = await api.client.post(
        "/api/v1/tasks",
        json={"name": "x", **SHELL, "secret_env": {"TOKEN": SECRET}},
        headers=alice.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "secret_env"
    assert "secrets.key" in response.text
    assert SECRET not in response.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"params": {"argv": ["env"], "env": {"A=B": "1"}}}, "params.env"),
        ({"params": {"argv": ["env"], "env": {"": "1"}}}, "params.env"),
        ({"secret_env": {"A=B": SECRET}}, "secret_env"),
        ({"secret_env": {"SCHEDULER_TASK_ID": SECRET}}, "secret_env"),
        ({"secret_env": {"TOKEN": 1}}, "secret_env.TOKEN"),
        ({"executor": "http", "params": {"url": "https://example.com"}}, "secret_env"),
    ],
)
async def test_bad_environment_names_and_misplaced_secrets_are_422(
    keyed: Api, fields: dict[str, object], field: str
) -> None:
    alice = await keyed.user("alice", Role.USER)
    body = {"name": "x", **SHELL, "secret_env": {"TOKEN": SECRET}, **fields}
    response = await keyed.client.post("/api/v1/tasks", json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert SECRET not in response.text


async def test_the_worker_protocol_hands_the_secrets_to_a_worker_credential_only(
    keyed: Api,
) -> None:
    alice = await keyed.user("alice", Role.USER)
    worker = await keyed.user("worker-1", Role.WORKER)
    admin = await keyed.user("root", Role.ADMIN)
    task = await _create(keyed, alice)
    registration = {"hostname": "box", "pid": 1, "queues": ["default"], "capacity": 1}
    answers = {}
    for caller in (admin, worker):
        registered = await keyed.client.post(
            "/api/v1/worker/register",
            json={"name": caller.user.username, **registration},
            headers=caller.headers,
        )
        assert registered.status_code == 201, registered.text
        await keyed.run(alice, str(task["id"]))
        claimed = await keyed.client.post(
            "/api/v1/worker/claim?wait=5",
            json={"worker_id": registered.json()["id"]},
            headers=caller.headers,
        )
        assert claimed.status_code == 200, claimed.text
        answers[caller.user.username] = claimed.json()
    assert answers["worker-1"]["secret_env"] == {"TOKEN": SECRET}
    assert answers["root"]["secret_env"] == {}
    assert SECRET not in str(answers["root"])


async def test_outcomes_from_http_workers_are_masked_by_the_server(keyed: Api) -> None:
    alice = await keyed.user("alice", Role.USER)
    worker = await keyed.user("worker-1", Role.WORKER)
    task = await _create(keyed, alice)
    registered = await keyed.client.post(
        "/api/v1/worker/register",
        json={"name": "w", "hostname": "box", "pid": 1, "queues": ["default"], "capacity": 1},
        headers=worker.headers,
    )
    worker_id = registered.json()["id"]
    run = await keyed.run(alice, str(task["id"]))
    claimed = (
        await keyed.client.post(
            "/api/v1/worker/claim?wait=5", json={"worker_id": worker_id}, headers=worker.headers
        )
    ).json()
    completed = await keyed.client.post(
        f"/api/v1/worker/runs/{run['id']}/complete",
        json={
            "worker_id": worker_id,
            "token": claimed["token"],
            "status": "failed",
            "output": f"leaked {SECRET} and {SECRET[::-1]}",
            "error": f"error with {SECRET}",
        },
        headers=worker.headers,
    )
    assert completed.status_code == 200, completed.text
    assert SECRET not in completed.text
    stored = await keyed.client.get(f"/api/v1/runs/{run['id']}", headers=alice.headers)
    assert SECRET not in stored.text
    assert SECRET[::-1] not in stored.text
    output = await keyed.client.get(f"/api/v1/runs/{run['id']}/output", headers=alice.headers)
    assert SECRET not in output.text
    assert "[REDACTED]" in output.text
    events = await keyed.client.get(f"/api/v1/runs/{run['id']}/events", headers=alice.headers)
    assert events.status_code == 200, events.text
    assert "error with [REDACTED]" in events.text
    assert SECRET not in events.text
