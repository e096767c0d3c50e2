"""Choose and build the ``RunQueue`` adapter named by configuration.

Kept free of the Settings class: composition roots pass plain values, tests call it directly.
Each adapter is an async context manager; the caller enters it (connects, starts listeners)
and exits it (closes consumers and connections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.errors import ConfigError

if TYPE_CHECKING:
    from scheduler_infrastructure.queues.memory import MemoryRunQueue
    from scheduler_infrastructure.queues.postgres import PostgresRunQueue
    from scheduler_infrastructure.queues.rabbitmq import RabbitMQRunQueue
    from scheduler_infrastructure.queues.redis import RedisStreamsRunQueue

QUEUE_BACKENDS = ("memory", "postgres", "rabbitmq", "redis")

#: Every adapter is a ``RunQueue`` and an async context manager with ``aclose()``.
QueueAdapter: TypeAlias = (
    "MemoryRunQueue | PostgresRunQueue | RabbitMQRunQueue | RedisStreamsRunQueue"
)


def build_run_queue(
    *,
    backend: str,
    engine: AsyncEngine | None = None,
    rabbitmq_url: str = "",
    redis_url: str = "",
    prefix: str = "scheduler",
    **options: Any,
) -> QueueAdapter:
    """The adapter for ``backend``; ``options`` go to its constructor (e.g.
    ``visibility_timeout`` for postgres and redis)."""
    if backend == "memory":
        from scheduler_infrastructure.queues.memory import MemoryRunQueue

        return MemoryRunQueue(**options)
    if backend == "postgres":
        if engine is None:
            raise ConfigError("queue.backend", "postgres needs the database engine")
        from scheduler_infrastructure.queues.postgres import PostgresRunQueue

        return PostgresRunQueue(engine, prefix=prefix, **options)
    if backend == "rabbitmq":
        if not rabbitmq_url:
            raise ConfigError("rabbitmq.url", "required when queue.backend is rabbitmq")
        from scheduler_infrastructure.queues.rabbitmq import RabbitMQRunQueue

        return RabbitMQRunQueue(rabbitmq_url, prefix=prefix, **options)
    if backend == "redis":
        if not redis_url:
            raise ConfigError("redis.url", "required when queue.backend is redis")
        from scheduler_infrastructure.queues.redis import RedisStreamsRunQueue

        return RedisStreamsRunQueue(redis_url, prefix=prefix, **options)
    raise ConfigError("queue.backend", f"unknown backend {backend!r}; one of {QUEUE_BACKENDS}")
