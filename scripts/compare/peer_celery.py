"""Celery app for bench_peers.py: RabbitMQ broker, no result backend, one no-op task that
counts itself in Redis (and, when given its send time, records its start latency)."""

import os
import time

import redis
from celery import Celery

PREFIX = os.environ.get("PEER_PREFIX", "peer")
counter = redis.Redis.from_url(os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379/13"))
app = Celery(
    "peer_celery", broker=os.environ.get("PEER_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
)
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=16,
    task_default_queue=f"{PREFIX}-celery",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(sent: float | None = None) -> None:
    if sent is not None:
        counter.rpush(f"{PREFIX}:latency", time.time() - sent)
    counter.incr(f"{PREFIX}:done")
