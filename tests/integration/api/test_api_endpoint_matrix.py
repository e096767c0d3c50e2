"""Every endpoint, four ways: no credentials (401), a role that may not (403), invalid input
(422 naming the field), and for owned objects someone else's (404; see test_api_security)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from api_harness import Api, Caller

from scheduler_domain.accounts import Role

SOME_ID = "01900000-0000-7000-8000-000000000000"
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
}


async def operations(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    document = (await api.client.get("/schema/openapi.json")).json()
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "patch", "put", "delete"}:
                found.append((method.upper(), path, operation))
    return found


async def test_every_operation_but_the_public_ones_needs_credentials(api: Api) -> None:
    ops = await operations(api)
    assert len(ops) >= 40
    for method, path, operation in ops:
        concrete = re.sub(r"\{[^}]+\}", SOME_ID, path)
        response = await api.client.request(method, concrete, json={})
        if (method, path) in PUBLIC:
            assert response.status_code != 401 or path.startswith("/api/v1/auth"), path
            assert operation.get("security") in ([{}], []), path
            continue
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["code"] in ("authentication-failed",)
        assert "401" in operation["responses"], (method, path)


async def test_every_operation_documents_its_problems(api: Api) -> None:
    for method, path, operation in await operations(api):
        if path in ("/health", "/ready"):
            continue
        problems = {
            code: spec
            for code, spec in operation["responses"].items()
            if code.startswith(("4", "5")) and code != "503"
        }
        assert problems, (method, path)
        for spec in problems.values():
            assert "application/problem+json" in spec["content"], (method, path)


FORBIDDEN: list[tuple[Role, str, str, dict[str, Any] | None]] = [
    (Role.VIEWER, "POST", "/api/v1/tasks", {"name": "x", "executor": "noop"}),
    (Role.VIEWER, "PATCH", f"/api/v1/tasks/{SOME_ID}", {"priority": 1}),
    (Role.VIEWER, "DELETE", f"/api/v1/tasks/{SOME_ID}", None),
    (Role.VIEWER, "POST", f"/api/v1/tasks/{SOME_ID}/pause", None),
    (Role.VIEWER, "POST", f"/api/v1/tasks/{SOME_ID}/resume", None),
    (Role.VIEWER, "POST", f"/api/v1/tasks/{SOME_ID}/trigger", None),
    (Role.VIEWER, "POST", f"/api/v1/runs/{SOME_ID}/cancel", None),
    (Role.VIEWER, "POST", f"/api/v1/runs/{SOME_ID}/retry", None),
    (Role.VIEWER, "POST", "/api/v1/webhooks", {"url": "https://hooks.example.com/"}),
    (Role.VIEWER, "PATCH", f"/api/v1/webhooks/{SOME_ID}", {"enabled": False}),
    (Role.VIEWER, "DELETE", f"/api/v1/webhooks/{SOME_ID}", None),
    (Role.VIEWER, "POST", f"/api/v1/webhooks/{SOME_ID}/test", None),
    (Role.USER, "POST", "/api/v1/templates", {"name": "t", "executor": "noop"}),
    (Role.USER, "PATCH", f"/api/v1/templates/{SOME_ID}", {"description": "x"}),
    (Role.USER, "DELETE", f"/api/v1/templates/{SOME_ID}", None),
    (Role.USER, "POST", f"/api/v1/templates/{SOME_ID}/subscriptions/bulk", {"subscriptions": []}),
    (Role.VIEWER, "POST", f"/api/v1/templates/{SOME_ID}/subscriptions", {"params": {}}),
    (Role.VIEWER, "PATCH", f"/api/v1/subscriptions/{SOME_ID}", {"params": {}}),
    (Role.USER, "POST", f"/api/v1/workers/{SOME_ID}/drain", None),
    (Role.USER, "POST", f"/api/v1/workers/{SOME_ID}/undrain", None),
    (Role.USER, "GET", "/api/v1/users", None),
    (Role.USER, "POST", "/api/v1/users", {"username": "zed", "password": "p" * 12}),
    (Role.OPERATOR, "GET", f"/api/v1/users/{SOME_ID}", None),
    (Role.OPERATOR, "PATCH", f"/api/v1/users/{SOME_ID}", {"disabled": True}),
    (Role.OPERATOR, "POST", f"/api/v1/users/{SOME_ID}/reset-password", {"password": "p" * 12}),
    (Role.OPERATOR, "POST", "/api/v1/worker/claim", {"worker_id": SOME_ID}),
    (Role.USER, "POST", "/api/v1/worker/heartbeat", {"worker_id": SOME_ID}),
    (
        Role.USER,
        "POST",
        f"/api/v1/worker/runs/{SOME_ID}/complete",
        {"worker_id": SOME_ID, "token": 1, "status": "succeeded"},
    ),
    (Role.VIEWER, "POST", "/api/v1/worker/deregister", {"worker_id": SOME_ID}),
    (
        Role.VIEWER,
        "POST",
        f"/api/v1/worker/runs/{SOME_ID}/release",
        {"worker_id": SOME_ID, "token": 1},
    ),
    (Role.WORKER, "GET", f"/api/v1/tasks/{SOME_ID}", None),
    (Role.WORKER, "GET", f"/api/v1/runs/{SOME_ID}/output", None),
    (Role.WORKER, "POST", "/api/v1/api-keys", {"name": "k"}),
    (Role.WORKER, "GET", f"/api/v1/workers/{SOME_ID}", None),
]


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    FORBIDDEN,
    ids=[f"{r.value}-{m}-{p.replace(SOME_ID, '{id}')}" for r, m, p, _ in FORBIDDEN],
)
async def test_roles_that_may_not_get_403(
    api: Api, role: Role, method: str, path: str, body: dict[str, Any] | None
) -> None:
    caller = await api.user(f"someone-{role.value}", role)

    response = await api.client.request(method, path, json=body, headers=caller.headers)

    assert response.status_code == 403, response.text
    assert response.json()["code"] == "permission-denied"


INVALID: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/api/v1/tasks", {"executor": "noop"}, "name"),
    ("GET", "/api/v1/tasks?limit=0", None, "limit"),
    ("GET", "/api/v1/tasks?enabled=perhaps", None, "enabled"),
    ("GET", "/api/v1/runs?trigger=telepathy", None, "trigger"),
    ("GET", "/api/v1/runs?created_before=yesterday", None, "created_before"),
    ("GET", "/api/v1/workers?status=asleep", None, "status"),
    ("GET", "/api/v1/users?cursor=bm9wZQ", None, "cursor"),
    ("POST", "/api/v1/api-keys", {"role": "viewer"}, "name"),
    ("POST", "/api/v1/users", {"username": "x", "password": "p" * 12}, "username"),
    ("PATCH", "/api/v1/users/{admin}", {"role": "overlord"}, "role"),
    ("POST", "/api/v1/users/{admin}/reset-password", {"password": "short"}, "password"),
    ("POST", "/api/v1/auth/refresh", {}, "refresh_token"),
    ("POST", "/api/v1/auth/logout", {"token": "x"}, "token"),
    ("POST", "/api/v1/worker/register", {"name": "w", "hostname": "h", "pid": 1,
                                         "queues": ["q"], "capacity": 0}, "capacity"),
    ("POST", "/api/v1/worker/heartbeat", {"worker_id": SOME_ID,
                                          "runs": [{"run_id": "r", "token": -1}]}, "runs[0].token"),
    ("POST", "/api/v1/worker/claim", {}, "worker_id"),
    ("POST", "/api/v1/templates", {"name": "t", "executor": "noop", "params_schema": []},
     "params_schema"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    INVALID,
    ids=[f"{m}-{p}-{f}" for m, p, _, f in INVALID],
)
async def test_invalid_input_names_the_field(
    api: Api, admin: Caller, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    response = await api.client.request(
        method, path.replace("{admin}", admin.id), json=body, headers=admin.headers
    )

    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["type"].startswith("https://scheduler.dev/problems/")


async def test_invalid_input_on_task_endpoints_names_the_field(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    run = await api.run(alice, task["id"])
    checks = [
        ("PATCH", f"/api/v1/tasks/{task['id']}", {"priority": 99}, "priority"),
        ("POST", f"/api/v1/tasks/{task['id']}/trigger", None, "idempotency_key"),
        ("GET", f"/api/v1/tasks/{task['id']}/runs?status=bogus", None, "status"),
        ("GET", f"/api/v1/tasks/{task['id']}/schedule?decisions=-1", None, "decisions"),
        ("POST", f"/api/v1/runs/{run['id']}/cancel", {"reason": "r" * 501}, "reason"),
    ]
    for method, path, body, field in checks:
        headers = dict(alice.headers)
        if field == "idempotency_key":
            headers["Idempotency-Key"] = " "
        response = await api.client.request(method, path, json=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["field"] == field, (path, response.json())


async def test_unknown_paths_and_methods_are_problems(api: Api, alice: Caller) -> None:
    missing = await api.client.get("/api/v1/nothing", headers=alice.headers)
    method = await api.client.put("/api/v1/tasks", headers=alice.headers)

    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert method.status_code == 405
    assert method.json()["code"] == "method-not-allowed"


async def test_malformed_json_is_a_400(api: Api, alice: Caller) -> None:
    response = await api.client.post(
        "/api/v1/tasks",
        content=b"{not json",
        headers={**alice.headers, "content-type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "malformed-request"
