"""The attack list: forged and misused tokens, dead API keys, disabled users, BOLA, mass
assignment, oversized requests and login throttling."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from api_harness import AUDIENCE, ISSUER, JWT_SECRET, MAX_BODY, PASSWORD, Api, Caller, running_api
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.throttle import Allowance, LoginThrottle
from scheduler_domain.accounts import Role

ME = "/api/v1/auth/me"
REQUIRED = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ")


def claims_for(caller: Caller, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": caller.id,
        "role": caller.user.role.value,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j-1",
        "typ": "access",
        "gen": caller.user.token_generation,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def forge(claims: dict[str, Any], *, key: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def refused(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    response = await api.client.get(ME, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    return dict(response.json())


# -- tokens ---------------------------------------------------------------------------------------


async def test_a_correctly_forged_token_works_so_the_refusals_below_mean_something(
    api: Api, alice: Caller
) -> None:
    response = await api.client.get(ME, headers=bearer(forge(claims_for(alice))))

    assert response.status_code == 200


async def test_alg_none_is_refused(api: Api, alice: Caller) -> None:
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(alice))}."

    await refused(api, bearer(token))


async def test_wrong_signing_key_is_refused(api: Api, alice: Caller) -> None:
    await refused(api, bearer(forge(claims_for(alice), key="another-secret-" + "y" * 40)))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_other_algorithms_are_refused(api: Api, alice: Caller) -> None:
    await refused(api, bearer(forge(claims_for(alice), algorithm="HS512")))


async def test_tampered_payload_is_refused(api: Api, admin: Caller, alice: Caller) -> None:
    header, _, signature = alice.headers["Authorization"].removeprefix("Bearer ").split(".")
    for change in ({"role": "admin"}, {"sub": admin.id}):
        payload = b64(claims_for(alice, **change))
        await refused(api, bearer(f"{header}.{payload}.{signature}"))


@pytest.mark.parametrize(
    "override",
    [
        {"exp": int(time.time()) - 3600},
        {"nbf": int(time.time()) + 3600},
        {"aud": "someone-else"},
        {"iss": "evil"},
    ],
    ids=["expired", "not-yet-valid", "wrong-aud", "wrong-iss"],
)
async def test_claims_are_checked(api: Api, alice: Caller, override: dict[str, Any]) -> None:
    await refused(api, bearer(forge(claims_for(alice, **override))))


@pytest.mark.parametrize("missing", REQUIRED)
async def test_every_standard_claim_is_required(api: Api, alice: Caller, missing: str) -> None:
    await refused(api, bearer(forge(claims_for(alice, **{missing: None}))))


async def test_a_refresh_token_is_no_access_token(api: Api, alice: Caller) -> None:
    await refused(api, bearer(alice.tokens["refresh_token"]))


async def test_an_access_token_is_no_refresh_token(api: Api, alice: Caller) -> None:
    response = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.tokens["access_token"]}
    )

    assert response.status_code == 401


async def test_refresh_token_reuse_revokes_the_family(api: Api, alice: Caller) -> None:
    stolen = alice.tokens["refresh_token"]
    rotated = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": stolen})
    legitimate = rotated.json()["refresh_token"]

    replay = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": stolen})
    after = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": legitimate})

    assert rotated.status_code == 200
    assert replay.status_code == 401
    assert after.status_code == 401


async def test_garbage_bearer_values_are_refused_alike(api: Api) -> None:
    bodies = [
        await refused(api, {"Authorization": value})
        for value in ("Bearer", "Bearer x.y.z", "Basic dXNlcjpwYXNz", "Bearer " + "a" * 9000)
    ]

    assert all(body == bodies[0] for body in bodies)


# -- API keys -------------------------------------------------------------------------------------


async def test_dead_api_keys_all_get_the_same_401(api: Api, alice: Caller) -> None:
    async def issue(name: str, **extra: Any) -> dict[str, Any]:
        response = await api.client.post(
            "/api/v1/api-keys", json={"name": name, **extra}, headers=alice.headers
        )
        return dict(response.json())

    revoked = await issue("revoked")
    await api.client.delete(f"/api/v1/api-keys/{revoked['api_key']['id']}", headers=alice.headers)
    expiring = await issue(
        "expiring", expires_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    )
    async with api.resources.uow_factory() as uow:  # let it expire without sleeping
        stored = await uow.api_keys.get(expiring["api_key"]["id"])
        assert stored is not None
        stored.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await uow.api_keys.update(stored)
        await uow.commit()
    live = await issue("live")
    prefix = live["key"][: len("sk_") + 12]
    wrong = prefix + "_" + "A" * 43

    answers = [
        await refused(api, {"X-API-Key": revoked["key"]}),
        await refused(api, {"X-API-Key": expiring["key"]}),
        await refused(api, {"X-API-Key": wrong}),
        await refused(api, bearer(wrong)),
        await refused(api, {"X-API-Key": "sk_short"}),
    ]

    assert all(answer == answers[0] for answer in answers)
    assert (await api.client.get(ME, headers={"X-API-Key": live["key"]})).status_code == 200


async def test_disabled_users_tokens_and_keys_are_refused_at_once(
    api: Api, admin: Caller, alice: Caller
) -> None:
    issued = await api.client.post("/api/v1/api-keys", json={"name": "k"}, headers=alice.headers)
    key = issued.json()["key"]

    disabled = await api.client.patch(
        f"/api/v1/users/{alice.id}", json={"disabled": True}, headers=admin.headers
    )

    assert disabled.status_code == 200
    await refused(api, alice.headers)
    await refused(api, {"X-API-Key": key})
    refresh = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    login = await api.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert refresh.status_code == 401
    assert login.status_code == 401


async def test_demoting_the_owner_invalidates_keys_above_the_new_role(
    api: Api, admin: Caller
) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    issued = await api.client.post(
        "/api/v1/api-keys", json={"name": "ops", "role": "operator"}, headers=operator.headers
    )
    await api.client.patch(
        f"/api/v1/users/{operator.id}", json={"role": "viewer"}, headers=admin.headers
    )

    await refused(api, {"X-API-Key": issued.json()["key"]})
    await refused(api, operator.headers)  # the role change ended the operator's access token


# -- object-level authorization -------------------------------------------------------------------


async def test_another_users_task_and_run_answer_404(api: Api, alice: Caller, bob: Caller) -> None:
    task = await api.task(bob, "bobs")
    run = await api.run(bob, task["id"])
    t, r = f"/api/v1/tasks/{task['id']}", f"/api/v1/runs/{run['id']}"
    probes = [
        ("GET", t, None),
        ("PATCH", t, {"priority": 1}),
        ("DELETE", t, None),
        ("POST", f"{t}/pause", None),
        ("POST", f"{t}/resume", None),
        ("POST", f"{t}/trigger", None),
        ("GET", f"{t}/runs", None),
        ("GET", f"{t}/schedule", None),
        ("GET", f"{t}/dependencies", None),
        ("GET", r, None),
        ("POST", f"{r}/cancel", None),
        ("POST", f"{r}/retry", None),
        ("GET", f"{r}/output", None),
        ("GET", f"{r}/events", None),
        ("GET", f"/api/v1/runs?task_id={task['id']}", None),
    ]
    for method, url, body in probes:
        response = await api.client.request(method, url, json=body, headers=alice.headers)
        assert response.status_code == 404, (method, url, response.text)

    mine = await api.client.get(f"/api/v1/tasks?owner_id={bob.id}", headers=alice.headers)
    runs = await api.client.get("/api/v1/runs", headers=alice.headers)
    assert mine.json()["items"] == []
    assert runs.json()["items"] == []
    still = await api.client.get(r, headers=bob.headers)
    assert still.json()["status"] == "queued"


async def test_depending_on_someone_elses_task_is_refused(
    api: Api, alice: Caller, bob: Caller
) -> None:
    task = await api.task(bob, "bobs")

    response = await api.client.post(
        "/api/v1/tasks",
        json={"name": "sneaky", "executor": "noop", "depends_on": [task["id"]]},
        headers=alice.headers,
    )

    assert response.status_code == 422
    assert response.json()["field"] == "depends_on"


async def test_another_users_api_key_answers_404(api: Api, alice: Caller, bob: Caller) -> None:
    issued = await api.client.post("/api/v1/api-keys", json={"name": "b"}, headers=bob.headers)
    key_id = issued.json()["api_key"]["id"]

    for method, url in (
        ("GET", f"/api/v1/api-keys/{key_id}"),
        ("DELETE", f"/api/v1/api-keys/{key_id}"),
        ("POST", f"/api/v1/api-keys/{key_id}/revoke"),
    ):
        response = await api.client.request(method, url, headers=alice.headers)
        assert response.status_code == 404, url
    listed = await api.client.get(f"/api/v1/api-keys?owner_id={bob.id}", headers=alice.headers)
    assert listed.json()["items"] == []


# -- mass assignment ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/tasks", {"name": "x", "executor": "noop", "owner_id": "u"}, "owner_id"),
        ("POST", "/api/v1/tasks", {"name": "x", "executor": "noop", "status": "done"}, "status"),
        ("POST", "/api/v1/tasks", {"name": "x", "executor": "noop", "id": "mine"}, "id"),
        ("POST", "/api/v1/tasks", {"name": "x", "executor": "noop", "version": 9}, "version"),
        ("POST", "/api/v1/api-keys", {"name": "k", "owner_id": "u"}, "owner_id"),
        ("POST", "/api/v1/api-keys", {"name": "k", "id": "u"}, "id"),
        ("POST", "/api/v1/auth/login", {"username": "a", "password": "b", "role": "x"}, "role"),
    ],
)
async def test_server_owned_fields_are_refused_by_name(
    api: Api, alice: Caller, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.client.request(method, path, json=body, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == field


async def test_user_update_refuses_other_fields(api: Api, admin: Caller, alice: Caller) -> None:
    for field, value in (("username", "mallory"), ("id", "x"), ("password_hash", "x")):
        response = await api.client.patch(
            f"/api/v1/users/{alice.id}", json={field: value}, headers=admin.headers
        )
        assert response.status_code == 422
        assert response.json()["field"] == field


async def test_a_user_cannot_raise_their_own_role(api: Api, alice: Caller) -> None:
    response = await api.client.patch(
        f"/api/v1/users/{alice.id}", json={"role": "admin"}, headers=alice.headers
    )

    assert response.status_code == 403


# -- size limits ----------------------------------------------------------------------------------


async def test_oversized_bodies_are_refused_with_413(api: Api, alice: Caller) -> None:
    body = {"name": "big", "executor": "noop", "description": "x" * (MAX_BODY + 1)}
    response = await api.client.post("/api/v1/tasks", json=body, headers=alice.headers)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path", ["/api/v1/tasks", "/api/v1/runs", "/api/v1/workers", "/api/v1/api-keys"]
)
async def test_a_million_limit_is_one_bounded_page(api: Api, admin: Caller, path: str) -> None:
    response = await api.client.get(f"{path}?limit=1000000", headers=admin.headers)

    assert response.status_code == 200
    assert response.json()["limit"] <= 500


async def test_nul_characters_are_refused(api: Api, alice: Caller) -> None:
    body = b'{"name": "x", "executor": "noop", "description": "a\\u0000b"}'
    response = await api.client.post(
        "/api/v1/tasks",
        content=body,
        headers={**alice.headers, "content-type": "application/json"},
    )
    query = await api.client.get("/api/v1/tasks?queue=a%00b", headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert query.status_code == 422


# -- throttling -----------------------------------------------------------------------------------


async def test_login_is_throttled_per_account(clean_engine: AsyncEngine) -> None:
    throttle = LoginThrottle(
        per_account=Allowance(3, timedelta(minutes=15)),
        per_address=Allowance(1000, timedelta(minutes=1)),
    )
    async with running_api(clean_engine, throttle=throttle) as api:
        await api.accounts.create_user("alice", PASSWORD, Role.USER)
        wrong = {"username": "alice", "password": "wrong password!"}
        answers = [
            (await api.client.post("/api/v1/auth/login", json=wrong)).status_code for _ in range(3)
        ]
        locked = await api.client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD}
        )

        assert answers == [401, 401, 401]
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        assert locked.json()["code"] == "too-many-requests"


async def test_login_is_throttled_per_client_address(clean_engine: AsyncEngine) -> None:
    throttle = LoginThrottle(
        per_account=Allowance(1000, timedelta(minutes=15)),
        per_address=Allowance(4, timedelta(minutes=1)),
    )
    async with running_api(clean_engine, throttle=throttle) as api:
        answers = [
            (
                await api.client.post(
                    "/api/v1/auth/login", json={"username": f"u{i}", "password": "x" * 12}
                )
            ).status_code
            for i in range(5)
        ]

        assert answers == [401, 401, 401, 401, 429]


# -- forged cursors -------------------------------------------------------------------------------


def forged_cursor(*values: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        forged_cursor("0001-01-01T00:00:00+14:00", "x"),
        forged_cursor("9999-12-31T23:59:59-14:00", "x"),
        forged_cursor("\u0000"),
        "x" * 400,
        "abc.def",
    ],
    ids=["year-0", "year-10000", "nul", "junk", "bad-mac"],
)
async def test_cursors_the_server_did_not_make_are_refused(
    api: Api, admin: Caller, cursor: str
) -> None:
    for path in ("/api/v1/runs", "/api/v1/tasks", "/api/v1/users", "/api/v1/workers"):
        response = await api.client.get(path, params={"cursor": cursor}, headers=admin.headers)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["field"] == "cursor"


async def test_a_tampered_cursor_is_refused(api: Api, alice: Caller) -> None:
    task = await api.task(alice)
    for _ in range(3):
        await api.run(alice, task["id"])
    page = await api.client.get("/api/v1/runs?limit=1", headers=alice.headers)
    inner, _, mac = page.json()["next_cursor"].rpartition(".")

    tampered = await api.client.get(
        "/api/v1/runs", params={"limit": 1, "cursor": forged_cursor("x", "y") + "." + mac},
        headers=alice.headers,
    )  # fmt: skip
    genuine = await api.client.get(
        "/api/v1/runs", params={"limit": 1, "cursor": f"{inner}.{mac}"}, headers=alice.headers
    )

    assert tampered.status_code == 422
    assert genuine.status_code == 200
