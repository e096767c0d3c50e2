"""Builds the event log's outside readers from the settings: the webhook sender and store,
the delivery settings, and the broker topic."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.events.webhook_delivery import DeliverySettings
from scheduler_application.ports.webhooks import EventTopic
from scheduler_domain.outbound import OutboundPolicy
from scheduler_domain.webhooks import RetryPolicy
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.outbound.webhook_sender import HttpWebhookSender
from scheduler_infrastructure.persistence.webhooks import SqlConsumerPositions, SqlWebhookStore
from scheduler_infrastructure.queues.event_topics import RabbitMQEventTopic, RedisEventTopic
from scheduler_infrastructure.resources import _with_password as with_password


def webhook_policy(settings: Settings) -> OutboundPolicy:
    """The ``http`` executor's outbound policy, plus ``events.webhooks.allow``."""
    return OutboundPolicy.from_allow(
        (*settings.executors.http.allow, *settings.events.webhooks.allow),
        field="events.webhooks.allow",
    )


def build_webhook_sender(settings: Settings) -> HttpWebhookSender:
    return HttpWebhookSender(policy=webhook_policy(settings))


def build_webhook_store(engine: AsyncEngine) -> SqlWebhookStore:
    return SqlWebhookStore(engine)


def build_consumer_positions(engine: AsyncEngine) -> SqlConsumerPositions:
    return SqlConsumerPositions(engine)


def delivery_settings(settings: Settings) -> DeliverySettings:
    w = settings.events.webhooks
    return DeliverySettings(
        retry=RetryPolicy(
            base_delay=timedelta(seconds=w.retry_base_seconds),
            max_delay=timedelta(seconds=w.retry_max_seconds),
            max_attempts=w.max_attempts,
        ),
        timeout=timedelta(seconds=w.timeout_seconds),
        batch=w.batch,
        concurrency=w.concurrency,
        disable_after_failures=w.disable_after_failures,
        disable_after=timedelta(hours=w.disable_after_hours),
    )


def build_event_topic(settings: Settings) -> EventTopic | None:
    """The ``events.publish.backend`` destination, on ``rabbitmq.url`` / ``redis.url``."""
    p = settings.events.publish
    if p.backend == "rabbitmq":
        url = with_password(settings.rabbitmq.url, settings.rabbitmq.password)
        return RabbitMQEventTopic(url=url, exchange=p.exchange)
    if p.backend == "redis":
        url = with_password(settings.redis.url, settings.redis.password)
        return RedisEventTopic(url=url, stream=p.stream, maxlen=p.stream_maxlen)
    return None
