"""Adapters of the ``RunQueue`` port: memory, Postgres, RabbitMQ and Redis Streams.

Composition roots call :func:`build_run_queue`; the adapters' driver imports happen only when
their backend is chosen.
"""

from scheduler_infrastructure.queues.factory import QUEUE_BACKENDS, QueueAdapter, build_run_queue

__all__ = ["QUEUE_BACKENDS", "QueueAdapter", "build_run_queue"]
