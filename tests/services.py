"""The real services the integration and end-to-end tests use, and the one rule about them:
a test whose service is unreachable is skipped with the reason — except under ``CI=true``,
where that is a failure.

Addresses (override with environment variables): PostgreSQL ``SCHEDULER_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``, trust auth), RabbitMQ
``SCHEDULER_TEST_RABBITMQ_URL`` (``amqp://guest:guest@127.0.0.1:5672/``), Redis
``SCHEDULER_TEST_REDIS_URL`` (``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import asyncio
import os

import aio_pika
import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_URL = os.environ.get("SCHEDULER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("SCHEDULER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

LABELS = {"postgres": "PostgreSQL", "rabbitmq": "RabbitMQ", "redis": "Redis"}


def plain_dsn(url: str) -> str:
    """The URL as asyncpg itself takes it (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def require(service: str, problem: str | None) -> None:
    """Skip the calling test when ``problem`` says the service is unusable; fail instead
    when CI=true."""
    if problem is None:
        return
    message = f"{service} is unreachable ({problem})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


async def probe(service: str) -> str | None:
    """Why ``service`` (postgres, rabbitmq, redis) cannot be used right now, or None."""
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
            else:
                raise ValueError(f"unknown service {service!r}")
    except ValueError:
        raise
    except Exception as error:  # any failure means "not usable here"
        return f"{type(error).__name__}: {error}"
    return None


_verdicts: dict[str, str | None] = {}


async def require_service(service: str) -> None:
    """Skip-or-fail unless ``service`` answers (probed once per test session); anything but
    postgres, rabbitmq and redis (the in-process memory queue, SQLite) needs nothing."""
    if service not in LABELS:
        return
    if service not in _verdicts:
        _verdicts[service] = await probe(service)
    require(LABELS[service], _verdicts[service])
