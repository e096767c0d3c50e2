"""RabbitMQ (aio-pika): a durable priority queue per queue name, publisher confirms, manual acks.

Queue ``q`` is the durable classic queue ``<prefix>.q`` with ``x-max-priority: 9``; a rejected
message (``nack(requeue=False)``, or one that cannot be decoded) is dead-lettered through the
default exchange to ``<prefix>.q.dead``. Messages are persistent. ``publish_many`` sends every
message before awaiting the confirmations together.

The connection is robust: after a network failure or a broker restart aio-pika reconnects and
restores channels, QoS and consumers. Deliveries received on the old channel can no longer be
acked (the broker redelivers them), so their acks are ignored and any that were still buffered
are dropped rather than handed out. Each consumer has its own channel with ``basic.qos`` =
``prefetch`` (channel-wide when it consumes several queues); closing the consumer closes the
channel, which returns its unacked deliveries to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Self

import aio_pika
from aio_pika.abc import AbstractQueue, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import (
    ChannelInvalidStateError,
    ChannelPreconditionFailed,
    MessageProcessError,
    PublishError,
)
from pamqp.commands import Basic
from pamqp.common import FieldTable

from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery, RunMessage
from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues.priorities import MAX_PRIORITY, clamp
from scheduler_infrastructure.queues.rabbitmq_consumer import (
    DRIVER_ERRORS,
    RabbitMQConsumer,
    RabbitMQTag,
)

log = logging.getLogger("scheduler.queues.rabbitmq")

CONTENT_TYPE = "application/x-msgpack"
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT.value


class RabbitMQRunQueue:
    """The RabbitMQ adapter of ``RunQueue``; ``async with`` connects, exit disconnects."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "scheduler",
        reconnect_interval: float = 1.0,
        connect_timeout: float = 10.0,
        operation_timeout: float = 10.0,
        connection_name: str | None = None,
    ) -> None:
        self._url = url
        self.prefix = prefix
        self.reconnect_interval = reconnect_interval
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self.connection_name = connection_name or (f"{prefix}:{socket.gethostname()}:{os.getpid()}")
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._declared: set[str] = set()
        self._consumers: set[RabbitMQConsumer] = set()

    def queue_name(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    def dead_letter_queue_name(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.dead"

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            self._connection = await aio_pika.connect_robust(
                self._url,
                timeout=self.connect_timeout,
                reconnect_interval=self.reconnect_interval,
                client_properties={"connection_name": self.connection_name},
            )
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        except DRIVER_ERRORS as error:
            await self.aclose()
            raise Unavailable(f"RabbitMQ is unavailable: {error!r}", dependency="broker") from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*(consumer.aclose() for consumer in list(self._consumers)))
        connection, self._connection, self._channel = self._connection, None, None
        self._declared.clear()
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                log.debug("closing the RabbitMQ connection failed", exc_info=True)

    # -- RunQueue --------------------------------------------------------------------------------

    async def publish(self, message: RunMessage) -> None:
        await self.publish_many((message,))

    async def publish_many(self, messages_: Sequence[RunMessage]) -> None:
        if not messages_:
            return
        try:
            async with asyncio.timeout(self.operation_timeout):
                try:
                    await self._publish(messages_)
                except PublishError:
                    # Unroutable: a queue was deleted behind our back. Declare again, once.
                    self._declared.clear()
                    await self._publish(messages_)
        except DRIVER_ERRORS as error:
            raise Unavailable(
                f"RabbitMQ did not confirm the publish: {error!r}", dependency="broker"
            ) from error

    def consume(self, queues: Sequence[str], *, prefetch: int) -> RabbitMQConsumer:
        consumer = RabbitMQConsumer(self, queues=queues, prefetch=prefetch)
        self._consumers.add(consumer)
        consumer.start(on_close=lambda closed: self._consumers.discard(consumer))
        return consumer

    async def ack(self, delivery: Delivery) -> None:
        tag = _tag(delivery)
        tag.consumer.settle(tag)
        await self._settle(tag, tag.incoming.ack())

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        tag = _tag(delivery)
        tag.consumer.settle(tag)
        await self._settle(tag, tag.incoming.nack(requeue=requeue))

    async def depth(self, queue: str) -> int:
        """Messages ready in the queue (not counting those delivered and not yet acked)."""
        try:
            async with asyncio.timeout(self.operation_timeout):
                await self._declare(queue)
                channel = await (await self._publish_channel()).get_underlay_channel()
                declared = await channel.queue_declare(
                    self.queue_name(queue), durable=True, arguments=self._arguments(queue)
                )
        except DRIVER_ERRORS as error:
            raise Unavailable(f"RabbitMQ is unavailable: {error!r}", dependency="broker") from error
        return int(declared.message_count or 0)

    async def delete_if_empty(self, queue: str) -> bool:
        """``queue.delete`` with ``if-empty`` (and ``if-unused`` for the queue itself: only a
        consumer holds unacked deliveries), dead letters first; the broker refuses a queue
        that holds a message (406, which closes the scratch channel), and that is False."""
        try:
            async with asyncio.timeout(self.operation_timeout):
                for name, if_unused in (
                    (self.dead_letter_queue_name(queue), False),
                    (self.queue_name(queue), True),
                ):
                    if not await self._delete_on_scratch(name, if_unused=if_unused):
                        return False
        except DRIVER_ERRORS as error:
            raise Unavailable(f"RabbitMQ is unavailable: {error!r}", dependency="broker") from error
        self._declared.discard(queue)
        return True

    async def _delete_on_scratch(self, name: str, *, if_unused: bool) -> bool:
        channel = await self._open_channel()
        try:
            underlay = await channel.get_underlay_channel()
            await underlay.queue_delete(name, if_unused=if_unused, if_empty=True)
        except ChannelPreconditionFailed:
            return False
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):
                await channel.close()
        return True

    # -- beyond the port -------------------------------------------------------------------------

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[RunMessage]:
        """Dead-lettered messages of ``queue``, oldest first, left in place (they are fetched
        unacked on a scratch channel, which is closed to put them back)."""
        found: list[RunMessage] = []
        try:
            async with asyncio.timeout(self.operation_timeout):
                channel = await self._open_channel()
                try:
                    dead = await channel.declare_queue(
                        self.dead_letter_queue_name(queue), durable=True
                    )
                    while len(found) < limit:
                        incoming = await dead.get(no_ack=False, fail=False)
                        if incoming is None:
                            break
                        try:
                            found.append(messages.decode(incoming.body))
                        except messages.UnreadableMessage:
                            continue
                finally:
                    await channel.close()
        except DRIVER_ERRORS as error:
            raise Unavailable(f"RabbitMQ is unavailable: {error!r}", dependency="broker") from error
        return found

    # -- internals -------------------------------------------------------------------------------

    async def _publish_channel(self) -> AbstractRobustChannel:
        """The publishing channel, once restored if the connection is being re-established
        (callers bound the wait with ``operation_timeout``)."""
        if self._channel is None:
            raise RuntimeError("use `async with RabbitMQRunQueue(...)` first")
        if self._channel.is_closed:
            await self._channel.ready()
        return self._channel

    async def _open_channel(self) -> AbstractRobustChannel:
        if self._connection is None:
            raise RuntimeError("use `async with RabbitMQRunQueue(...)` first")
        return await self._connection.channel(publisher_confirms=False)

    def _arguments(self, queue: str) -> dict[str, Any]:
        return {
            "x-max-priority": MAX_PRIORITY,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead_letter_queue_name(queue),
        }

    async def _declare_on(self, channel: AbstractRobustChannel, queue: str) -> AbstractQueue:
        await channel.declare_queue(self.dead_letter_queue_name(queue), durable=True)
        return await channel.declare_queue(
            self.queue_name(queue), durable=True, arguments=self._arguments(queue)
        )

    async def _declare(self, queue: str) -> None:
        if queue not in self._declared:
            await self._declare_on(await self._publish_channel(), queue)
            self._declared.add(queue)

    async def _publish(self, messages_: Sequence[RunMessage]) -> None:
        for queue in {message.queue for message in messages_}:
            await self._declare(queue)
        # Straight to aiormq, skipping aio-pika's Message wrapper; every publish is sent before
        # any confirmation is awaited.
        channel = await (await self._publish_channel()).get_underlay_channel()
        outcomes = await asyncio.gather(
            *(
                channel.basic_publish(
                    messages.encode(message),
                    exchange="",
                    routing_key=self.queue_name(message.queue),
                    # A fresh one each time: aiormq writes the message id into it.
                    properties=Basic.Properties(
                        delivery_mode=PERSISTENT,
                        priority=clamp(message.priority),
                        content_type=CONTENT_TYPE,
                        # The run's trace context, for tools that read AMQP headers (the
                        # worker reads it from the body, where every backend carries it).
                        headers=_trace_headers(message),
                    ),
                    mandatory=True,
                )
                for message in messages_
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _settle(self, tag: RabbitMQTag, settling: Coroutine[Any, Any, None]) -> None:
        try:
            await settling
        except (ChannelInvalidStateError, MessageProcessError):
            # The channel it came on is gone (the broker redelivers it) or it was settled.
            log.debug("ignoring the settlement of a stale delivery")
        except DRIVER_ERRORS as error:
            raise Unavailable(f"RabbitMQ is unavailable: {error!r}", dependency="broker") from error


def _tag(delivery: Delivery) -> RabbitMQTag:
    if not isinstance(delivery.tag, RabbitMQTag):
        raise TypeError("not a delivery of the RabbitMQ queue")
    return delivery.tag


def _trace_headers(message: RunMessage) -> FieldTable | None:
    return {"traceparent": message.traceparent} if message.traceparent else None
