"""Dramatiq actors for bench_peers.py: RabbitMQ broker, one no-op actor that counts itself in
Redis (and, when given its send time, records its start latency)."""

import os
import time

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker

PREFIX = os.environ.get("PEER_PREFIX", "peer")
counter = redis.Redis.from_url(os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379/13"))
dramatiq.set_broker(
    RabbitmqBroker(url=os.environ.get("PEER_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F"))
)


@dramatiq.actor(queue_name=f"{PREFIX}-dramatiq", max_retries=0)
def noop(sent: float | None = None) -> None:
    if sent is not None:
        counter.rpush(f"{PREFIX}:latency", time.time() - sent)
    counter.incr(f"{PREFIX}:done")
