"""The Postgres queue's consumer: claims rows into its buffer, keeps their locks alive."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery
from scheduler_infrastructure.queues import messages
from scheduler_infrastructure.queues.consumer import BufferedConsumer, wait_at_most

if TYPE_CHECKING:
    from scheduler_infrastructure.queues.postgres import PostgresRunQueue

log = logging.getLogger("scheduler.queues.postgres")

#: How long a full consumer waits for more capacity before claiming again (see
#: ``BufferedConsumer.wait_for_capacity``): a little latency under load for fewer round trips.
FETCH_GATHER_SECONDS = 0.005


@dataclass(slots=True, eq=False)
class PostgresTag:
    id: int
    consumer: PostgresConsumer


class PostgresConsumer(BufferedConsumer):
    """Claims rows into its buffer; closing releases the buffered rows at once, while handed-out
    unacked rows stay locked until acked or until their lock lapses."""

    def __init__(
        self, owner: PostgresRunQueue, *, queues: Sequence[str], prefetch: int, name: str
    ) -> None:
        super().__init__(queues=queues, prefetch=prefetch)
        self.name = name
        self._owner = owner
        self._wakeup = asyncio.Event()
        #: When (``time.monotonic``) the last claim that came back with fewer rows than it
        #: asked for was sent: nothing claimable was left in its queues then.
        self.unfilled_at = -1.0

    def wake(self, queue: str | None = None) -> None:
        """A notification for ``queue`` (or for any): claim again. The claim reads every queue
        of the consumer in one statement, so which one was named does not matter."""
        self._wakeup.set()

    def _loops(self) -> Sequence[Coroutine[Any, Any, None]]:
        return (self._fetch_forever(), self._keep_locks())

    async def _fetch_forever(self) -> None:
        failures = 0
        while True:
            await self.wait_for_capacity(gather=FETCH_GATHER_SECONDS)
            self._wakeup.clear()
            try:
                full = await self._fetch()
            except Unavailable as error:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "queue consumer cannot claim (%s); retrying", error)
                await asyncio.sleep(min(0.05 * 2**failures, 5.0))
                continue
            failures = 0
            if full:
                continue
            await wait_at_most(self._wakeup, self._owner.poll_interval)

    async def _fetch(self) -> bool:
        """Claim up to ``free`` rows from the consumer's queues (one statement for all of
        them); True if the claim was filled."""
        wanted = self.free
        if wanted <= 0:
            return True
        sent = time.monotonic()
        rows = await self._owner._claim(self, self.queues, wanted)
        if len(rows) < wanted:
            self.unfilled_at = sent
        await self._accept(rows)
        return len(rows) == wanted

    async def _accept(self, rows: list[Any]) -> None:
        over_limit: list[int] = []
        unreadable: list[int] = []
        for row in rows:
            if row["delivery_count"] > self._owner.max_deliveries:
                over_limit.append(row["id"])
                continue
            try:
                message = messages.decode(row["payload"])
            except messages.UnreadableMessage as error:
                log.error("dead-lettering queue row %s: %s", row["id"], error)
                unreadable.append(row["id"])
                continue
            tag = PostgresTag(row["id"], self)
            self.push(Delivery(message=message, tag=tag, redelivered=row["delivery_count"] > 1))
        if over_limit:
            log.warning("dead-lettering queue rows delivered too often: %s", over_limit)
            await self._owner._bury(over_limit, "delivery limit reached")
        if unreadable:
            await self._owner._bury(unreadable, "unreadable")

    async def _keep_locks(self) -> None:
        while True:
            await asyncio.sleep(self._owner.visibility_timeout / 3)
            ids = [tag.id for tag in self.unacked_tags if isinstance(tag, PostgresTag)]
            if not ids:
                continue
            try:
                await self._owner._extend(self.name, ids)
            except Unavailable as error:
                log.warning("queue consumer cannot extend its locks (%s)", error)

    async def _shutdown(self, buffered: list[Delivery]) -> None:
        ids = [delivery.tag.id for delivery in buffered if isinstance(delivery.tag, PostgresTag)]
        if ids:
            await self._owner._release(self.name, ids)
