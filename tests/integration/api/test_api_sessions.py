"""Sessions end when they should, over the real API on SQLite and PostgreSQL: logout, a password
change or reset, disabling and a role change refuse earlier access tokens at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_harness import PASSWORD, Api, running_api
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_domain.accounts import Role

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
CHANGE = "/api/v1/auth/password"
NEW_PASSWORD = "another long password"


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[Api]:
    """Both backends in turn (``engine`` empties the database afterwards)."""
    async with running_api(engine) as harness:
        yield harness


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def login(api: Api, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await api.client.post(LOGIN, json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def status_of_me(api: Api, headers: dict[str, str]) -> int:
    return (await api.client.get(ME, headers=headers)).status_code


async def test_logout_refuses_the_access_token_at_once(api: Api) -> None:
    alice = await api.user("alice")
    assert await status_of_me(api, alice.headers) == 200

    out = await api.client.post(
        "/api/v1/auth/logout", json={"refresh_token": alice.tokens["refresh_token"]}
    )

    assert out.status_code == 204
    assert await status_of_me(api, alice.headers) == 401


async def test_own_password_change_ends_other_sessions_and_returns_a_new_pair(api: Api) -> None:
    alice = await api.user("alice")
    other_device = await login(api, "alice")

    changed = await api.client.post(
        CHANGE,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=alice.headers,
    )

    assert changed.status_code == 200, changed.text
    assert await status_of_me(api, alice.headers) == 401
    assert await status_of_me(api, bearer(other_device)) == 401
    assert await status_of_me(api, bearer(changed.json())) == 200
    stale_refresh = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other_device["refresh_token"]}
    )
    assert stale_refresh.status_code == 401
    old = await api.client.post(LOGIN, json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    assert await login(api, "alice", NEW_PASSWORD)


async def test_password_change_refuses_a_wrong_current_and_a_weak_new_password(api: Api) -> None:
    alice = await api.user("alice")

    wrong = await api.client.post(
        CHANGE,
        json={"current_password": "not the password", "new_password": NEW_PASSWORD},
        headers=alice.headers,
    )
    weak = await api.client.post(
        CHANGE, json={"current_password": PASSWORD, "new_password": "short"}, headers=alice.headers
    )
    anonymous = await api.client.post(
        CHANGE, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert wrong.status_code == 403
    assert wrong.json()["field"] == "current_password"
    assert weak.status_code == 422
    assert weak.json()["field"] == "new_password"
    assert anonymous.status_code == 401
    assert await status_of_me(api, alice.headers) == 200
    assert await login(api, "alice")


async def test_wrong_current_passwords_are_throttled_like_logins(api: Api) -> None:
    alice = await api.user("alice")
    body = {"current_password": "not the password", "new_password": NEW_PASSWORD}

    answers = [
        (await api.client.post(CHANGE, json=body, headers=alice.headers)).status_code
        for _ in range(7)
    ]

    assert answers[:5] == [403] * 5
    assert answers[-1] == 429


async def test_reset_refuses_access_tokens_and_revokes_keys_when_asked(api: Api) -> None:
    admin = await api.user("root", Role.ADMIN)
    alice = await api.user("alice")
    key = await api.client.post("/api/v1/api-keys", json={"name": "ci"}, headers=alice.headers)
    assert key.status_code == 201, key.text
    key_headers = {"X-API-Key": key.json()["key"]}

    kept = await api.client.post(
        f"/api/v1/users/{alice.id}/reset-password",
        json={"password": NEW_PASSWORD},
        headers=admin.headers,
    )
    after_reset = await status_of_me(api, alice.headers)
    key_after_reset = await status_of_me(api, key_headers)
    revoked = await api.client.post(
        f"/api/v1/users/{alice.id}/reset-password",
        json={"password": "yet another long password", "revoke_api_keys": True},
        headers=admin.headers,
    )

    assert kept.status_code == 204
    assert after_reset == 401
    assert key_after_reset == 200
    assert revoked.status_code == 204
    assert await status_of_me(api, key_headers) == 401
    refresh = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    assert refresh.status_code == 401


async def test_disabling_then_enabling_leaves_earlier_tokens_refused(api: Api) -> None:
    admin = await api.user("root", Role.ADMIN)
    alice = await api.user("alice")
    url = f"/api/v1/users/{alice.id}"

    await api.client.patch(url, json={"disabled": True}, headers=admin.headers)
    enabled = await api.client.patch(url, json={"disabled": False}, headers=admin.headers)

    assert enabled.json()["disabled"] is False
    assert await status_of_me(api, alice.headers) == 401
    assert await status_of_me(api, bearer(await login(api, "alice"))) == 200


async def test_a_role_change_refuses_the_access_token_of_the_old_role(api: Api) -> None:
    admin = await api.user("root", Role.ADMIN)
    otto = await api.user("otto", Role.OPERATOR)

    demoted = await api.client.patch(
        f"/api/v1/users/{otto.id}", json={"role": "viewer"}, headers=admin.headers
    )
    renewed = await api.client.post(
        "/api/v1/auth/refresh", json={"refresh_token": otto.tokens["refresh_token"]}
    )

    assert demoted.status_code == 200
    assert await status_of_me(api, otto.headers) == 401
    assert renewed.json()["role"] == "viewer"
    me = await api.client.get(ME, headers=bearer(renewed.json()))
    assert me.json()["role"] == "viewer"


async def test_usernames_are_case_insensitive(api: Api) -> None:
    admin = await api.user("root", Role.ADMIN)

    created = await api.client.post(
        "/api/v1/users", json={"username": "Alice", "password": PASSWORD}, headers=admin.headers
    )
    clash = await api.client.post(
        "/api/v1/users", json={"username": "ALICE", "password": PASSWORD}, headers=admin.headers
    )
    shouted = await api.client.post(LOGIN, json={"username": "ALICE", "password": PASSWORD})

    assert created.status_code == 201
    assert created.json()["username"] == "alice"
    assert clash.status_code == 409
    assert clash.json()["field"] == "username"
    assert shouted.status_code == 200
    assert shouted.json()["user_id"] == created.json()["id"]
