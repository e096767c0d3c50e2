"""Fixtures for the queue adapters: one ``make_queue`` for whichever backend a test runs on.

Services (override with environment variables):

- PostgreSQL ``SCHEDULER_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
  postgres``): a fresh ``scheduler_queue_test_<hex>`` database per session, migrated with the
  real Alembic history, dropped at the end;
- RabbitMQ ``SCHEDULER_TEST_RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/``);
- Redis ``SCHEDULER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

An unreachable service skips the tests that need it, with the reason; under ``CI=true`` that is a
failure instead. Each test takes unique queue names from ``new_queue_name`` and everything it
created under them (RabbitMQ queues, Redis keys, table rows) is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis
from queue_helpers import (
    BACKENDS,
    PREFIX,
    VISIBILITY_TIMEOUT,
    QueueMaker,
    admin_execute,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.queues import build_run_queue
from scheduler_infrastructure.queues.priorities import PRIORITIES
from services import POSTGRES_ADMIN_URL, RABBITMQ_URL, REDIS_URL, require_service


@pytest.fixture(scope="session")
async def queue_database_url() -> AsyncIterator[str]:
    await require_service("postgres")
    name = f"scheduler_queue_test_{secrets.token_hex(6)}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        # Alembic's env runs its own event loop: keep it off ours.
        await asyncio.to_thread(upgrade, rendered)
        yield rendered
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def queue_engine(queue_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(queue_database_url, pool_size=5)
    yield engine
    await engine.dispose()


# -- queues -------------------------------------------------------------------------------------


@pytest.fixture(
    params=[
        backend
        if backend == "memory"
        else pytest.param(backend, marks=getattr(pytest.mark, backend))
        for backend in BACKENDS
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, for the contract suite (``usefixtures("backend")``)."""
    return str(request.param)


@dataclass(frozen=True)
class QueueBackend:
    name: str
    engine: AsyncEngine | None = None


@pytest.fixture
def queue_backend(request: pytest.FixtureRequest) -> QueueBackend:
    """The backend the test runs on: its ``backend`` parameter, else its marker, else memory."""
    name = _backend_of(request) or "memory"
    if name == "postgres":
        # Synchronous on purpose: an async fixture cannot set up another one on demand.
        return QueueBackend(name, request.getfixturevalue("queue_engine"))
    return QueueBackend(name)


@pytest.fixture
async def new_queue_name(queue_backend: QueueBackend) -> AsyncIterator[Callable[[], str]]:
    """Unique queue names; whatever the test left under them is deleted afterwards."""
    names: list[str] = []

    def new() -> str:
        name = f"q-{uuid.uuid4().hex[:12]}"
        names.append(name)
        return name

    yield new
    if names:
        await _clean_up(queue_backend, names)


def _backend_of(request: pytest.FixtureRequest) -> str | None:
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "backend" in callspec.params:
        return str(callspec.params["backend"])
    for marker in ("postgres", "rabbitmq", "redis"):
        if request.node.get_closest_marker(marker) is not None:
            return marker
    return None


async def _clean_up(backend: QueueBackend, names: list[str]) -> None:
    if backend.name == "rabbitmq":
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            for name in names:
                for queue in (f"{PREFIX}.{name}", f"{PREFIX}.{name}.dead"):
                    await channel.queue_delete(queue)
        finally:
            await connection.close()
    elif backend.name == "redis":
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [f"{PREFIX}:{name}:p{priority}" for name in names for priority in PRIORITIES]
            keys += [f"{PREFIX}:{name}:dead" for name in names]
            await client.delete(*keys)
        finally:
            await client.aclose()
    elif backend.engine is not None:
        async with backend.engine.begin() as connection:
            for table in ("queue_messages", "queue_dead_letters"):
                await connection.execute(
                    text(f"DELETE FROM {table} WHERE queue = ANY(:names)"),
                    {"names": names},
                )


def queue_options(backend: str) -> dict[str, Any]:
    """Backend knobs the tests need: short visibility timeouts, quick polling."""
    if backend == "postgres":
        return {"visibility_timeout": VISIBILITY_TIMEOUT, "poll_interval": 0.5}
    if backend == "redis":
        return {"visibility_timeout": VISIBILITY_TIMEOUT}
    if backend == "rabbitmq":
        return {"reconnect_interval": 0.5}
    return {}


@pytest.fixture
async def make_queue(
    queue_backend: QueueBackend, new_queue_name: Callable[[], str]
) -> AsyncIterator[QueueMaker]:
    """Opens adapters of the test's backend; all are closed when the test ends. Keyword
    arguments override the test defaults."""
    await require_service(queue_backend.name)
    opened: list[Any] = []

    async def make(**overrides: Any) -> Any:
        options = {**queue_options(queue_backend.name), **overrides}
        adapter = build_run_queue(
            backend=queue_backend.name,
            engine=queue_backend.engine,
            rabbitmq_url=RABBITMQ_URL,
            redis_url=REDIS_URL,
            prefix=PREFIX,
            **options,
        )
        await adapter.__aenter__()
        opened.append(adapter)
        return adapter

    yield make
    for adapter in reversed(opened):
        await adapter.aclose()
