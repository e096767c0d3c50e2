"""Publishing the event log to a broker topic (a RabbitMQ topic exchange or a Redis stream).

One publisher at a time (the ``event-topic`` lease) reads a page after its stored position,
publishes it in log order and waits for the broker's confirmation, and only then stores the
new position. So every event is published at least once, in log order (per run: the order of
its transitions); a crash or a broker outage between publishing and storing publishes the page
again (consumers deduplicate on the message id, the event's id). The position survives
restarts; a broker that comes back is reconnected to by the next step.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from scheduler_application.errors import Unavailable
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.coordination import LeaseStore
from scheduler_application.ports.repositories import EventQuery
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.ports.webhooks import ConsumerPositions, EventTopic
from scheduler_domain.events import EventCursor

log = logging.getLogger("scheduler.events")

CONSUMER = "event-topic"


class EventTopicRelay:
    def __init__(
        self,
        *,
        topic: EventTopic,
        positions: ConsumerPositions,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        leases: LeaseStore | None = None,
        holder: str = "dispatcher",
        batch: int = 500,
        lease_ttl: timedelta = timedelta(seconds=30),
        start_at_head: bool = True,
    ) -> None:
        self._topic = topic
        self._positions = positions
        self._uow_factory = uow_factory
        self._clock = clock
        self._leases = leases
        self._holder = holder
        self._batch = batch
        self._lease_ttl = lease_ttl
        self._start_at_head = start_at_head
        self.published = 0

    async def step(self) -> bool:
        """Publish one page; True when it was full (more to publish now)."""
        if self._leases is not None and not await self._leases.try_acquire(
            CONSUMER, holder=self._holder, ttl=self._lease_ttl, now=self._clock.now()
        ):
            return False
        position = await self._position()
        async with self._uow_factory() as uow:
            events = await uow.events.read_log(EventQuery(after=position), limit=self._batch)
        if not events:
            return False
        try:
            # bounded, so that the lease cannot pass to another publisher meanwhile
            async with asyncio.timeout(self._lease_ttl.total_seconds() / 2):
                await self._topic.publish(events)
        except TimeoutError:
            raise Unavailable(
                "the event topic did not confirm in time", dependency="broker"
            ) from None
        await self._positions.set(CONSUMER, events[-1].cursor, now=self._clock.now())
        self.published += len(events)
        return len(events) >= self._batch

    async def _position(self) -> EventCursor:
        """The stored position; the first time, the log's head (from now on), or its start
        when ``start_at_head`` is off."""
        stored = await self._positions.get(CONSUMER)
        if stored is not None:
            return stored
        async with self._uow_factory() as uow:
            head = await uow.events.log_head()
        start = head if self._start_at_head else EventCursor(0, 0)
        await self._positions.set(CONSUMER, start, now=self._clock.now())
        return start

    async def aclose(self) -> None:
        try:
            if self._leases is not None:
                await self._leases.release(CONSUMER, holder=self._holder)
        except Exception as error:  # an outage: the lease simply expires
            log.warning("could not release the %s lease: %s", CONSUMER, error)
        finally:
            await self._topic.aclose()
