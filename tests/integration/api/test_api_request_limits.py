"""Request rate limits per principal (``api.rate_limits``): 429 with ``Retry-After`` and the
``RateLimit-*`` fields once the budget is spent, sized per role, one bucket per API key or
user, shared by API instances through Redis; unauthenticated auth endpoints limited per
client address."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from api_harness import Api, api_settings, running_api
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.throttle import Allowance, LoginThrottle
from scheduler_domain.accounts import Role
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.ratelimit import RedisRateLimiter
from services import REDIS_URL, require_service

ME = "/api/v1/auth/me"


def limited(*limits: str) -> Settings:
    settings = api_settings()
    return replace(settings, api=replace(settings.api, rate_limits=limits))


async def test_the_budget_spent_answers_429_with_retry_after_and_ratelimit_fields(
    clean_engine: AsyncEngine,
) -> None:
    async with running_api(clean_engine, settings=limited("user=3/m")) as api:
        alice = await api.user("alice", Role.USER)
        for remaining in (2, 1, 0):
            answer = await api.client.get(ME, headers=alice.headers)
            assert answer.status_code == 200, answer.text
            assert answer.headers["RateLimit-Limit"] == "3"
            assert answer.headers["RateLimit-Remaining"] == str(remaining)
            assert 0 < int(answer.headers["RateLimit-Reset"]) <= 60
        refused = await api.client.get(ME, headers=alice.headers)
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert 1 <= int(refused.headers["Retry-After"]) <= 20  # a token every 20 s
        assert refused.headers["RateLimit-Limit"] == "3"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.json()["status"] == 429


async def test_limits_are_sized_per_role_with_a_default_for_the_others(
    clean_engine: AsyncEngine,
) -> None:
    async with running_api(clean_engine, settings=limited("viewer=1/m", "*=4/m")) as api:
        viewer = await api.user("vera", Role.VIEWER)
        alice = await api.user("alice", Role.USER)
        assert (await api.client.get(ME, headers=viewer.headers)).status_code == 200
        assert (await api.client.get(ME, headers=viewer.headers)).status_code == 429
        for _ in range(4):
            answer = await api.client.get(ME, headers=alice.headers)
            assert answer.status_code == 200
            assert answer.headers["RateLimit-Limit"] == "4"
        assert (await api.client.get(ME, headers=alice.headers)).status_code == 429


async def test_a_role_without_a_limit_is_not_limited(clean_engine: AsyncEngine) -> None:
    async with running_api(clean_engine, settings=limited("viewer=1/m")) as api:
        admin = await api.user("root", Role.ADMIN)
        for _ in range(5):
            answer = await api.client.get(ME, headers=admin.headers)
            assert answer.status_code == 200
            assert "RateLimit-Limit" not in answer.headers


async def test_each_user_and_each_api_key_has_its_own_bucket(clean_engine: AsyncEngine) -> None:
    async with running_api(clean_engine, settings=limited("user=2/m")) as api:
        alice = await api.user("alice", Role.USER)
        bob = await api.user("bob", Role.USER)
        issued = await api.client.post(
            "/api/v1/api-keys", json={"name": "ci"}, headers=alice.headers
        )
        assert issued.status_code == 201
        key = {"X-API-Key": issued.json()["key"]}
        assert (await api.client.get(ME, headers=alice.headers)).status_code == 200
        assert (await api.client.get(ME, headers=alice.headers)).status_code == 429
        assert (await api.client.get(ME, headers=bob.headers)).status_code == 200
        assert (await api.client.get(ME, headers=key)).status_code == 200
        assert (await api.client.get(ME, headers=key)).status_code == 200
        assert (await api.client.get(ME, headers=key)).status_code == 429
        assert (await api.client.get(ME, headers=bob.headers)).status_code == 200


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    await require_service("redis")
    prefix = f"scheduler-test:{secrets.token_hex(6)}:ratelimit"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_two_instances_share_one_budget_through_redis(
    clean_engine: AsyncEngine, redis_prefix: str
) -> None:
    settings = limited("user=4/m")
    async with (
        RedisRateLimiter(url=REDIS_URL, prefix=redis_prefix) as one,
        RedisRateLimiter(url=REDIS_URL, prefix=redis_prefix) as two,
        running_api(clean_engine, settings=settings, rate_limiter=one) as a,
        running_api(clean_engine, settings=settings, rate_limiter=two) as b,
    ):
        alice = await a.user("alice", Role.USER)
        answers = [await api.client.get(ME, headers=alice.headers) for api in (a, b, a, b, a, b)]
        assert [r.status_code for r in answers] == [200, 200, 200, 200, 429, 429]
        assert [r.headers["RateLimit-Remaining"] for r in answers[:4]] == ["3", "2", "1", "0"]
        assert not one.degraded
        assert not two.degraded


async def test_refresh_and_logout_are_limited_per_client_address_with_login(
    clean_engine: AsyncEngine,
) -> None:
    throttle = LoginThrottle(per_address=Allowance(3, timedelta(minutes=1)))
    async with running_api(clean_engine, throttle=throttle) as api:
        await _spend_the_address(api)


async def _spend_the_address(api: Api) -> None:
    bogus = {"refresh_token": "not-a-token"}
    assert (await api.client.post("/api/v1/auth/refresh", json=bogus)).status_code == 401
    assert (await api.client.post("/api/v1/auth/logout", json=bogus)).status_code == 401
    login = {"username": "nobody", "password": "wrong password here"}
    assert (await api.client.post("/api/v1/auth/login", json=login)).status_code == 401
    for path, body in (
        ("/api/v1/auth/refresh", bogus),
        ("/api/v1/auth/logout", bogus),
        ("/api/v1/auth/login", login),
    ):
        refused = await api.client.post(path, json=body)
        assert refused.status_code == 429, (path, refused.text)
        assert int(refused.headers["Retry-After"]) >= 1
