"""Driver errors surface as the application's ``Unavailable`` when a service cannot be reached.

Nothing listens on port 1 of the loopback interface, so every connection is refused at once.
"""

from __future__ import annotations

import pytest
from queue_helpers import run_message

from scheduler_application.errors import Unavailable
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.queues.postgres import PostgresRunQueue
from scheduler_infrastructure.queues.rabbitmq import RabbitMQRunQueue
from scheduler_infrastructure.queues.redis import RedisStreamsRunQueue

pytestmark = pytest.mark.timeout(60)


async def test_postgres_queue_reports_an_unreachable_database() -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere", pool_size=1)
    try:
        async with PostgresRunQueue(engine, listen=False) as queue:
            with pytest.raises(Unavailable):
                await queue.publish(run_message("default"))
            with pytest.raises(Unavailable):
                await queue.depth("default")
    finally:
        await engine.dispose()


async def test_rabbitmq_queue_reports_an_unreachable_broker() -> None:
    with pytest.raises(Unavailable):
        async with RabbitMQRunQueue("amqp://guest:guest@127.0.0.1:1/", connect_timeout=5):
            pass


async def test_redis_queue_reports_an_unreachable_server() -> None:
    with pytest.raises(Unavailable):
        async with RedisStreamsRunQueue("redis://127.0.0.1:1/0"):
            pass
