"""Broker destinations for the event log (``events.publish.backend``): a RabbitMQ topic
exchange or a Redis stream. Each message is one log entry (the webhook payload: ``{"type",
"timestamp", "data"}``), its message id the entry's id.

RabbitMQ: a durable ``topic`` exchange (``events.publish.exchange``, default
``scheduler.events``), routing key the entry's kind (``run.failed``, ``task.created``),
persistent messages, publisher confirms: :meth:`publish` returns once every message of the
page is confirmed, in the order given (one channel, published one after the other).

Redis: ``XADD`` to one stream (``events.publish.stream``, default ``scheduler:events``) with
fields ``id``, ``type`` and ``body``, pipelined in order; trimmed to about ``maxlen`` entries.

On any broker error the connection is dropped and the error raised: the relay keeps its
position and the next step reconnects and publishes the page again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import aio_pika
import redis.asyncio as aioredis

from scheduler_application.errors import Unavailable
from scheduler_application.events.webhooks import payload
from scheduler_domain.events import LoggedEvent


class RabbitMQEventTopic:
    def __init__(self, *, url: str, exchange: str = "scheduler.events", timeout: float = 10.0):
        self._url = url
        self._exchange_name = exchange
        self._timeout = timeout
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def _open(self) -> aio_pika.abc.AbstractExchange:
        connection = self._connection
        if self._exchange is not None and connection is not None and not connection.is_closed:
            return self._exchange
        await self._drop()
        self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return self._exchange

    async def publish(self, events: Sequence[LoggedEvent]) -> None:
        try:
            exchange = await self._open()
            for event in events:
                await exchange.publish(
                    aio_pika.Message(
                        payload(event),
                        message_id=event.id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        type=event.kind,
                        headers={"cursor": str(event.cursor)},
                    ),
                    routing_key=event.kind,
                    timeout=self._timeout,
                )
        except Exception as error:
            await self._drop()
            raise Unavailable(
                f"RabbitMQ event topic: {type(error).__name__}: {error}", dependency="broker"
            ) from error

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken; reopened next time
                await connection.close()

    async def aclose(self) -> None:
        await self._drop()


class RedisEventTopic:
    def __init__(
        self, *, url: str, stream: str = "scheduler:events", maxlen: int = 1_000_000,
        timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self._url = url
        self._stream = stream
        self._maxlen = maxlen
        self._timeout = timeout
        self._client: aioredis.Redis | None = None

    async def publish(self, events: Sequence[LoggedEvent]) -> None:
        try:
            if self._client is None:
                self._client = aioredis.Redis.from_url(
                    self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
                )
            pipe = self._client.pipeline(transaction=False)
            for event in events:
                pipe.xadd(
                    self._stream,
                    {"id": event.id, "type": event.kind, "body": payload(event)},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()
        except Exception as error:
            await self._drop()
            raise Unavailable(
                f"Redis event stream: {type(error).__name__}: {error}", dependency="redis"
            ) from error

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # already broken
                await client.aclose()

    async def aclose(self) -> None:
        await self._drop()
