"""Helpers shared by the queue tests (imported as a module; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from scheduler_application.ports.queue import Delivery, RunMessage

POSTGRES_ADMIN_URL = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_URL = os.environ.get("SCHEDULER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("SCHEDULER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

BACKENDS = ("memory", "postgres", "rabbitmq", "redis")
#: Short enough that redelivery after a consumer's death is quick to observe.
VISIBILITY_TIMEOUT = 1.0
#: Every queue name and key of this session starts with it, so runs never see each other.
PREFIX = f"qtest{secrets.token_hex(3)}"

QueueMaker = Callable[..., Awaitable[Any]]


# -- service availability ---------------------------------------------------------------------


def require(service: str, problem: str | None) -> None:
    """Skip when ``problem`` says the service is unusable (fail instead when CI=true)."""
    if problem is None:
        return
    message = f"{service} is unreachable ({problem})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


_problems: dict[str, str | None] = {}


async def _probe(service: str) -> str | None:
    if service in _problems:
        return _problems[service]
    try:
        async with asyncio.timeout(10):
            if service == "postgres":
                connection = await asyncpg.connect(plain_dsn(POSTGRES_ADMIN_URL))
                await connection.close()
            elif service == "rabbitmq":
                amqp = await aio_pika.connect(RABBITMQ_URL)
                await amqp.close()
            elif service == "redis":
                client = aioredis.Redis.from_url(REDIS_URL)
                try:
                    await client.ping()
                finally:
                    await client.aclose()
        problem = None
    except Exception as error:  # any failure means "not usable here"
        problem = f"{type(error).__name__}: {error}"
    _problems[service] = problem
    return problem


async def require_service(service: str) -> None:
    labels = {"postgres": "PostgreSQL", "rabbitmq": "RabbitMQ", "redis": "Redis"}
    if service in labels:
        require(labels[service], await _probe(service))


# -- PostgreSQL -------------------------------------------------------------------------------


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin_execute(statement: str, *args: object) -> Any:
    connection = await asyncpg.connect(plain_dsn(POSTGRES_ADMIN_URL), timeout=10)
    try:
        return await connection.fetch(statement, *args)
    finally:
        await connection.close()


# -- helpers ------------------------------------------------------------------------------------


def run_message(queue: str, *, priority: int = 0, number: int = 0, **fields: Any) -> RunMessage:
    values: dict[str, Any] = {
        "run_id": f"run-{uuid.uuid4().hex[:10]}-{number}",
        "task_id": "task-1",
        "attempt": 1,
        "token": 1,
        "queue": queue,
        "priority": priority,
        "enqueued_at": datetime.now(UTC),
        **fields,
    }
    return RunMessage(**values)


async def next_delivery(consumer: Any, within: float = 10.0) -> Delivery:
    try:
        delivery: Delivery = await asyncio.wait_for(anext(consumer), within)
    except TimeoutError:
        pytest.fail(f"no delivery within {within} s")
    return delivery


async def assert_no_delivery(consumer: Any, within: float) -> None:
    try:
        delivery = await asyncio.wait_for(anext(consumer), within)
    except TimeoutError:
        return
    pytest.fail(f"unexpected delivery {delivery.message.run_id}")


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 20.0, interval: float = 0.2
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def publish_eventually(queue: Any, message: RunMessage, *, within: float = 30.0) -> None:
    """Publish, retrying while the adapter reports the service unavailable (it reconnects)."""
    from scheduler_application.errors import Unavailable

    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await queue.publish(message)
            return
        except Unavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)
