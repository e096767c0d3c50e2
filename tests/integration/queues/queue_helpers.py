"""Helpers shared by the queue tests (imported as a module; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from scheduler_application.ports.queue import Delivery, RunMessage
from services import (
    POSTGRES_ADMIN_URL,
    plain_dsn,
)

BACKENDS = ("memory", "postgres", "rabbitmq", "redis")
#: Short enough that redelivery after a consumer's death is quick to observe.
VISIBILITY_TIMEOUT = 1.0
#: Every queue name and key of this session starts with it, so runs never see each other.
PREFIX = f"qtest{secrets.token_hex(3)}"

QueueMaker = Callable[..., Awaitable[Any]]


# -- PostgreSQL -------------------------------------------------------------------------------


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
