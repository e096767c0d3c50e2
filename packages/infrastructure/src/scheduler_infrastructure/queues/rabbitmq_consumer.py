"""The RabbitMQ consumer: one robust channel per consumer, deliveries pushed into its buffer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pamqp.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from scheduler_application.ports.queue import Delivery
from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues.consumer import BufferedConsumer

if TYPE_CHECKING:
    from scheduler_infrastructure.queues.rabbitmq import RabbitMQRunQueue

log = logging.getLogger("scheduler.queues.rabbitmq")

#: Errors that mean "the broker cannot be reached right now" (translated to ``Unavailable``).
DRIVER_ERRORS = (
    AMQPError,
    ChannelInvalidStateError,
    pamqp.exceptions.PAMQPException,
    OSError,
    TimeoutError,
)


@dataclass(slots=True, eq=False)
class RabbitMQTag:
    incoming: AbstractIncomingMessage
    consumer: RabbitMQConsumer


class RabbitMQConsumer(BufferedConsumer):
    def __init__(self, owner: RabbitMQRunQueue, *, queues: Sequence[str], prefetch: int) -> None:
        super().__init__(queues=queues, prefetch=prefetch)
        self._owner = owner
        self._channel: AbstractRobustChannel | None = None

    def _loops(self) -> Sequence[Coroutine[Any, Any, None]]:
        return (self._subscribe(),)

    async def _subscribe(self) -> None:
        """Open the channel and start consuming; the robust connection keeps it going."""
        delay = 0.1
        while True:
            try:
                self._channel = await self._owner._open_channel()
                # Per consumer by default in RabbitMQ; channel-wide to cap several queues.
                await self._channel.set_qos(
                    prefetch_count=self.prefetch, global_=len(self.queues) > 1
                )
                for queue in self.queues:
                    declared = await self._owner._declare_on(self._channel, queue)
                    await declared.consume(self._on_message, no_ack=False)
                return
            except DRIVER_ERRORS as error:
                log.warning("cannot start consuming %s (%r); retrying", self.queues, error)
                await self._close_channel()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        try:
            message = messages.decode(incoming.body)
        except messages.UnreadableMessage as error:
            log.error("dead-lettering an unreadable message: %s", error)
            await incoming.reject(requeue=False)
            return
        tag = RabbitMQTag(incoming, self)
        self.push(Delivery(message=message, tag=tag, redelivered=bool(incoming.redelivered)))

    def _is_stale(self, delivery: Delivery) -> bool:
        tag = delivery.tag
        assert isinstance(tag, RabbitMQTag)
        try:
            tag.incoming.channel  # noqa: B018 (raises once the delivering channel is gone)
        except ChannelInvalidStateError:
            return True
        return False

    async def _shutdown(self, buffered: list[Delivery]) -> None:
        await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                await channel.close()
            except Exception:
                log.debug("closing a consumer channel failed", exc_info=True)
