"""The API under test: the real composition root on a migrated database and the memory queue,
driven over ASGI with httpx. Users are created through the application; tokens come from the
real login endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from litestar import Litestar
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_api.bootstrap import build_api
from scheduler_api.throttle import Allowance, LoginThrottle
from scheduler_application.accounts.users import AccountService
from scheduler_application.ports.coordination import RateLimiter
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.secrets import SecretBox
from scheduler_domain.accounts import Role, User
from scheduler_domain.executor_policy import ExecutorPolicy
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.settings import ApiSettings
from scheduler_infrastructure.persistence.migrations import target_metadata
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_infrastructure.ratelimit import LocalRateLimiter
from scheduler_infrastructure.resources import Resources
from scheduler_infrastructure.security.passwords import Argon2PasswordHasher

JWT_SECRET = "test-secret-" + "x" * 40
ISSUER = "scheduler"
AUDIENCE = "scheduler-api"
PASSWORD = "correct horse battery staple"
MAX_BODY = 64 * 1024
PAGE_CAP = 50
#: Real argon2id, with parameters cheap enough for a test suite.
FAST_HASHER = Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def api_settings() -> Settings:
    return Settings(
        api=ApiSettings(
            jwt_secret=JWT_SECRET,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            max_body_bytes=MAX_BODY,
            max_page_size=PAGE_CAP,
        )
    )


def lenient_throttle() -> LoginThrottle:
    return LoginThrottle(
        per_account=Allowance(5, timedelta(minutes=15)),
        per_address=Allowance(10_000, timedelta(minutes=1)),
    )


@dataclass
class Caller:
    """A user and the headers that authenticate as them."""

    user: User
    headers: dict[str, str]
    tokens: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.user.id


@dataclass
class Api:
    app: Litestar
    client: httpx.AsyncClient
    resources: Resources
    accounts: AccountService

    async def user(self, username: str, role: Role = Role.USER) -> Caller:
        user = await self.accounts.create_user(username, PASSWORD, role)
        response = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        tokens = response.json()
        return Caller(user, {"Authorization": f"Bearer {tokens['access_token']}"}, tokens)

    async def task(self, caller: Caller, name: str = "job", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "executor": "noop", **fields}
        response = await self.client.post("/api/v1/tasks", json=body, headers=caller.headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def run(self, caller: Caller, task_id: str, **headers: str) -> dict[str, Any]:
        response = await self.client.post(
            f"/api/v1/tasks/{task_id}/trigger", headers={**caller.headers, **headers}
        )
        assert response.status_code in (200, 201), response.text
        return dict(response.json())


async def warm_up(app: Litestar) -> None:
    """What the app's startup hook does (the ASGI transport runs no lifespan)."""
    for hook in app.on_startup:
        await hook()  # type: ignore[call-arg]


@asynccontextmanager
async def running_api(
    engine: AsyncEngine,
    *,
    throttle: LoginThrottle | None = None,
    queue: RunQueue | None = None,
    settings: Settings | None = None,
    secret_box: SecretBox | None = None,
    executor_policy: ExecutorPolicy | None = None,
    rate_limiter: RateLimiter | None = None,
    lifespan: bool = False,
) -> AsyncIterator[Api]:
    """An API on ``engine``; ``executor_policy`` defaults to the safe defaults of a
    multi-user install. ``lifespan``: run the app's whole lifespan (its listeners) as a
    server would, not only its startup hook."""
    settings = settings or api_settings()
    async with MemoryRunQueue() as memory:
        queue = queue or memory
        resources = Resources(
            settings=settings,
            engine=engine,
            uow_factory=SqlUnitOfWorkFactory(engine),
            queue=queue,
            clock=SystemClock(),
            secret_box=secret_box,
            executor_policy=executor_policy or ExecutorPolicy(),
            rate_limiter=rate_limiter or LocalRateLimiter(),
        )
        app = build_api(resources, hasher=FAST_HASHER, throttle=throttle or lenient_throttle())
        transport = httpx.ASGITransport(app=app)
        async with contextlib.AsyncExitStack() as stack:
            if lifespan:
                await stack.enter_async_context(app.lifespan())
            else:
                await warm_up(app)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )
            yield Api(
                app=app,
                client=client,
                resources=resources,
                accounts=AccountService(
                    uow_factory=resources.uow_factory, clock=resources.clock, hasher=FAST_HASHER
                ),
            )


async def wipe(engine: AsyncEngine) -> None:
    """Delete every row (schema and migration state stay)."""
    tables = target_metadata().sorted_tables
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            names = ", ".join(table.name for table in tables)
            await connection.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                await connection.execute(delete(table))
