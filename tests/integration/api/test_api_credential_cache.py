"""Two API instances on one PostgreSQL database, each with its own pool and its own cache of
accepted credentials (as two processes have): a session rule applied through one is obeyed by
the other at once — within the NOTIFY's delivery, waited for with a bound well under a second,
never by the cache's time to live (set to an hour here so that it cannot be what helps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from api_harness import Api, Caller, api_settings, running_api, wipe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.bootstrap import PRINCIPAL_CACHE_STATE
from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_domain.accounts import Role
from scheduler_infrastructure.persistence.engine import create_engine

pytestmark = pytest.mark.postgres

#: How long the other instance may take to hear of a change.
BOUND_SECONDS = 1.0


@asynccontextmanager
async def two_instances(
    postgres_url: str, postgres_engine: AsyncEngine
) -> AsyncIterator[tuple[Api, Api]]:
    """Entered and left in the test's own task (the apps' lifespans need that)."""
    settings = api_settings()
    settings = replace(settings, api=replace(settings.api, auth_cache_seconds=3600.0))
    other_engine = create_engine(postgres_url, pool_size=3)
    try:
        async with (
            running_api(postgres_engine, settings=settings, lifespan=True) as a,
            running_api(other_engine, settings=settings, lifespan=True) as b,
        ):
            await _until(lambda: _cache(a).enabled and _cache(b).enabled)
            yield a, b
    finally:
        await other_engine.dispose()
        await wipe(postgres_engine)


def _cache(api: Api) -> PrincipalCache:
    cache = api.app.state[PRINCIPAL_CACHE_STATE]
    assert isinstance(cache, PrincipalCache)
    return cache


async def _until(condition: object, *, bound: float = 10.0) -> None:
    deadline = time.monotonic() + bound
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _refused_within(api: Api, headers: dict[str, str]) -> float:
    """Seconds until ``api`` answers 401 to ``headers`` (fails past BOUND_SECONDS)."""
    started = time.monotonic()
    while True:
        answer = await api.client.get("/api/v1/auth/me", headers=headers)
        if answer.status_code == 401:
            return time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < BOUND_SECONDS, "still accepted by the other instance"
        await asyncio.sleep(0.005)


async def _remembered(api: Api, headers: dict[str, str]) -> None:
    """Use ``headers`` on ``api`` until it answers from its cache."""
    cache = _cache(api)
    for _ in range(2):
        assert (await api.client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    hits = cache.hits
    assert (await api.client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    assert cache.hits == hits + 1, "the credential is not remembered: this test would prove nothing"


async def _key(api: Api, caller: Caller) -> dict[str, str]:
    answer = await api.client.post("/api/v1/api-keys", json={"name": "ci"}, headers=caller.headers)
    assert answer.status_code == 201, answer.text
    return {"X-API-Key": answer.json()["key"], "id": answer.json()["api_key"]["id"]}


async def test_a_key_revoked_through_one_instance_is_refused_by_the_other(
    postgres_url: str, postgres_engine: AsyncEngine
) -> None:
    async with two_instances(postgres_url, postgres_engine) as (a, b):
        await _a_key_revoked_through_one_instance_is_refused_by_the_other(a, b)


async def _a_key_revoked_through_one_instance_is_refused_by_the_other(a: Api, b: Api) -> None:
    alice = await a.user("alice", Role.USER)
    key = await _key(a, alice)
    headers = {"X-API-Key": key["X-API-Key"]}
    await _remembered(b, headers)
    revoked = await a.client.delete(f"/api/v1/api-keys/{key['id']}", headers=alice.headers)
    assert revoked.status_code in (200, 204), revoked.text
    assert (await a.client.get("/api/v1/auth/me", headers=headers)).status_code == 401
    await _refused_within(b, headers)


async def test_a_role_change_through_one_instance_ends_tokens_on_the_other(
    postgres_url: str, postgres_engine: AsyncEngine
) -> None:
    async with two_instances(postgres_url, postgres_engine) as (a, b):
        await _a_role_change_through_one_instance_ends_tokens_on_the_other(a, b)


async def _a_role_change_through_one_instance_ends_tokens_on_the_other(a: Api, b: Api) -> None:
    admin = await a.user("root", Role.ADMIN)
    alice = await a.user("alice", Role.USER)
    await _remembered(b, alice.headers)
    changed = await a.client.patch(
        f"/api/v1/users/{alice.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert changed.status_code == 200, changed.text
    await _refused_within(b, alice.headers)


async def test_a_new_token_generation_through_one_instance_ends_tokens_on_the_other(
    postgres_url: str, postgres_engine: AsyncEngine
) -> None:
    async with two_instances(postgres_url, postgres_engine) as (a, b):
        await _a_new_token_generation_through_one_instance_ends_tokens_on_the_other(a, b)


async def _a_new_token_generation_through_one_instance_ends_tokens_on_the_other(
    a: Api, b: Api
) -> None:
    alice = await a.user("alice", Role.USER)
    await _remembered(b, alice.headers)
    out = await a.client.post(
        "/api/v1/auth/logout", json={"refresh_token": alice.tokens["refresh_token"]}
    )
    assert out.status_code == 204, out.text
    await _refused_within(b, alice.headers)


async def test_a_change_written_straight_to_the_database_is_obeyed_too(
    postgres_url: str, postgres_engine: AsyncEngine
) -> None:
    """What ``scheduler`` admin commands or an operator's SQL do: no API process involved."""
    async with two_instances(postgres_url, postgres_engine) as (a, b):
        await _straight_to_the_database(a, b, postgres_engine)


async def _straight_to_the_database(a: Api, b: Api, postgres_engine: AsyncEngine) -> None:
    alice = await a.user("alice", Role.USER)
    await _remembered(a, alice.headers)
    await _remembered(b, alice.headers)
    async with postgres_engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET disabled = true WHERE id = :id"), {"id": alice.id}
        )
    await _refused_within(a, alice.headers)
    await _refused_within(b, alice.headers)


async def test_without_the_subscription_nothing_is_served_from_memory(
    postgres_url: str, postgres_engine: AsyncEngine
) -> None:
    async with two_instances(postgres_url, postgres_engine) as (a, _):
        await _without_the_subscription_nothing_is_served_from_memory(a, a)


async def _without_the_subscription_nothing_is_served_from_memory(a: Api, _: Api) -> None:
    alice = await a.user("alice", Role.USER)
    await _remembered(a, alice.headers)
    cache = _cache(a)
    cache.suspend()  # what losing the listening connection does
    hits = cache.hits
    assert (await a.client.get("/api/v1/auth/me", headers=alice.headers)).status_code == 200
    assert cache.hits == hits
    assert len(cache) == 0


async def test_a_membership_change_through_one_instance_counts_on_the_other(
    postgres_url: str, postgres_engine: AsyncEngine
) -> None:
    """A credential carries its memberships: removing a member (a row of ``team_members``
    deleted through instance a) must reach instance b's cache through the trigger's NOTIFY."""
    async with two_instances(postgres_url, postgres_engine) as (a, b):
        alice = await a.user("alice", Role.USER)
        bob = await a.user("bob", Role.USER)
        made = await a.client.post("/api/v1/teams", json={"name": "ops"}, headers=alice.headers)
        assert made.status_code == 201, made.text
        added = await a.client.post(
            "/api/v1/teams/ops/members",
            json={"user": "bob", "role": "viewer"},
            headers=alice.headers,
        )
        assert added.status_code == 200, added.text
        task = await a.task(alice, "shared", team="ops")
        url = f"/api/v1/tasks/{task['id']}"
        await _remembered(b, bob.headers)
        assert (await b.client.get(url, headers=bob.headers)).status_code == 200
        removed = await a.client.delete("/api/v1/teams/ops/members/bob", headers=alice.headers)
        assert removed.status_code == 200, removed.text
        started = time.monotonic()
        while (await b.client.get(url, headers=bob.headers)).status_code != 404:
            assert time.monotonic() - started < BOUND_SECONDS, "the other instance still shows it"
            await asyncio.sleep(0.005)
