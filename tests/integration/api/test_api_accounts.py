"""Log-in, token rotation, log-out, API keys and user administration over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_harness import PASSWORD, Api, Caller

from scheduler_domain.accounts import Role

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"


async def test_login_returns_an_access_and_a_refresh_token(api: Api, alice: Caller) -> None:
    response = await api.client.post(LOGIN, json={"username": "alice", "password": PASSWORD})

    tokens = response.json()
    assert response.status_code == 200
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert tokens["role"] == "user"
    assert tokens["user_id"] == alice.id
    me = await api.client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["user"]["username"] == "alice"
    assert me.json()["via"] == "user"


async def test_unknown_user_and_wrong_password_get_the_same_answer(api: Api, alice: Caller) -> None:
    wrong = await api.client.post(LOGIN, json={"username": "alice", "password": "nope" * 4})
    unknown = await api.client.post(LOGIN, json={"username": "nobody", "password": "nope" * 4})

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["detail"] == "invalid username or password"


async def test_login_body_is_validated(api: Api) -> None:
    response = await api.client.post(LOGIN, json={"username": "alice"})

    assert response.status_code == 422
    assert response.json()["field"] == "password"


async def test_refresh_rotates_and_logout_ends_the_family(api: Api, alice: Caller) -> None:
    first = alice.tokens["refresh_token"]

    rotated = await api.client.post(REFRESH, json={"refresh_token": first})
    second = rotated.json()["refresh_token"]
    logged_out = await api.client.post(LOGOUT, json={"refresh_token": second})
    after = await api.client.post(REFRESH, json={"refresh_token": second})

    assert rotated.status_code == 200
    assert second != first
    assert logged_out.status_code == 204
    assert after.status_code == 401


async def test_api_key_lifecycle(api: Api, alice: Caller) -> None:
    issued = await api.client.post(
        "/api/v1/api-keys", json={"name": "ci", "role": "viewer"}, headers=alice.headers
    )
    key = issued.json()["key"]
    key_id = issued.json()["api_key"]["id"]

    bearer = await api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
    header = await api.client.get("/api/v1/tasks", headers={"X-API-Key": key})
    write = await api.client.post(
        "/api/v1/tasks", json={"name": "x", "executor": "noop"}, headers={"X-API-Key": key}
    )
    listed = await api.client.get("/api/v1/api-keys", headers=alice.headers)
    revoked = await api.client.delete(f"/api/v1/api-keys/{key_id}", headers=alice.headers)
    refused = await api.client.get("/api/v1/tasks", headers={"X-API-Key": key})

    assert issued.status_code == 201
    assert key.startswith("sk_")
    assert issued.headers["cache-control"] == "no-store"
    assert bearer.json()["role"] == "viewer"
    assert bearer.json()["via"] == "api_key"
    assert header.status_code == 200
    assert write.status_code == 403
    assert [k["id"] for k in listed.json()["items"]] == [key_id]
    assert "key" not in listed.json()["items"][0]
    assert revoked.status_code == 204
    assert refused.status_code == 401


async def test_api_key_role_cannot_exceed_the_issuers(api: Api, alice: Caller) -> None:
    for role in ("operator", "admin", "worker"):
        response = await api.client.post(
            "/api/v1/api-keys", json={"name": "up", "role": role}, headers=alice.headers
        )
        assert response.status_code == 403, role
        assert response.json()["field"] == "role"


async def test_admin_issues_worker_keys(api: Api, admin: Caller) -> None:
    response = await api.client.post(
        "/api/v1/api-keys", json={"name": "fleet", "role": "worker"}, headers=admin.headers
    )
    key = response.json()["key"]

    tasks = await api.client.get("/api/v1/tasks", headers={"X-API-Key": key})
    register = await api.client.post(
        "/api/v1/worker/register",
        json={"name": "w", "hostname": "h", "pid": 1, "queues": ["q"], "capacity": 1},
        headers={"X-API-Key": key},
    )

    assert tasks.status_code == 403
    assert register.status_code == 201


async def test_api_key_expiry_must_be_in_the_future(api: Api, alice: Caller) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    response = await api.client.post(
        "/api/v1/api-keys", json={"name": "old", "expires_at": past}, headers=alice.headers
    )

    assert response.status_code == 422
    assert response.json()["field"] == "expires_at"


async def test_api_keys_cannot_issue_api_keys(api: Api, alice: Caller) -> None:
    issued = await api.client.post("/api/v1/api-keys", json={"name": "a"}, headers=alice.headers)
    response = await api.client.post(
        "/api/v1/api-keys", json={"name": "b"}, headers={"X-API-Key": issued.json()["key"]}
    )

    assert response.status_code == 403


async def test_revoke_by_post_shows_the_revoked_key(api: Api, alice: Caller) -> None:
    issued = await api.client.post("/api/v1/api-keys", json={"name": "a"}, headers=alice.headers)
    key_id = issued.json()["api_key"]["id"]

    response = await api.client.post(f"/api/v1/api-keys/{key_id}/revoke", headers=alice.headers)
    fetched = await api.client.get(f"/api/v1/api-keys/{key_id}", headers=alice.headers)

    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert fetched.json()["revoked_at"] == response.json()["revoked_at"]


async def test_admin_manages_users(api: Api, admin: Caller) -> None:
    created = await api.client.post(
        "/api/v1/users",
        json={"username": "carol", "password": PASSWORD, "role": "operator"},
        headers=admin.headers,
    )
    user_id = created.json()["id"]
    listed = await api.client.get("/api/v1/users", headers=admin.headers)
    demoted = await api.client.patch(
        f"/api/v1/users/{user_id}", json={"role": "viewer"}, headers=admin.headers
    )
    reset = await api.client.post(
        f"/api/v1/users/{user_id}/reset-password",
        json={"password": "another long password"},
        headers=admin.headers,
    )
    old = await api.client.post(LOGIN, json={"username": "carol", "password": PASSWORD})
    new = await api.client.post(
        LOGIN, json={"username": "carol", "password": "another long password"}
    )

    assert created.status_code == 201
    assert "password" not in created.json()
    assert "password_hash" not in created.json()
    assert {u["username"] for u in listed.json()["items"]} == {"root", "carol"}
    assert demoted.json()["role"] == "viewer"
    assert reset.status_code == 204
    assert old.status_code == 401
    assert new.status_code == 200
    assert new.json()["role"] == "viewer"


async def test_user_creation_validates_and_refuses_duplicates(api: Api, admin: Caller) -> None:
    short = await api.client.post(
        "/api/v1/users", json={"username": "dave", "password": "short"}, headers=admin.headers
    )
    taken = await api.client.post(
        "/api/v1/users", json={"username": "root", "password": PASSWORD}, headers=admin.headers
    )
    role = await api.client.post(
        "/api/v1/users",
        json={"username": "erin", "password": PASSWORD, "role": "emperor"},
        headers=admin.headers,
    )

    assert short.status_code == 422
    assert short.json()["field"] == "password"
    assert taken.status_code == 409
    assert taken.json()["field"] == "username"
    assert role.status_code == 422
    assert role.json()["field"] == "role"


async def test_admin_cannot_demote_or_disable_themselves(api: Api, admin: Caller) -> None:
    url = f"/api/v1/users/{admin.id}"
    demote = await api.client.patch(url, json={"role": "user"}, headers=admin.headers)
    disable = await api.client.patch(url, json={"disabled": True}, headers=admin.headers)

    assert demote.status_code == 422
    assert demote.json()["field"] == "role"
    assert disable.status_code == 422
    assert disable.json()["field"] == "disabled"


async def test_non_admins_cannot_manage_users(api: Api, alice: Caller) -> None:
    operator = await api.user("otto", Role.OPERATOR)
    for caller in (alice, operator):
        listed = await api.client.get("/api/v1/users", headers=caller.headers)
        created = await api.client.post(
            "/api/v1/users", json={"username": "x1", "password": PASSWORD}, headers=caller.headers
        )
        assert listed.status_code == 403
        assert created.status_code == 403


async def test_unknown_user_is_not_found(api: Api, admin: Caller) -> None:
    response = await api.client.get(
        "/api/v1/users/01900000-0000-7000-8000-000000000000", headers=admin.headers
    )

    assert response.status_code == 404
