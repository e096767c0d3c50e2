"""An in-memory :class:`RunQueue` that records what went through it.

Priority first, then publication order, within a queue; at most ``prefetch`` unacked deliveries
per consumer; a consumer that goes away (its iterator is closed) gets its unacked deliveries
redelivered to others, marked ``redelivered``. Set ``unavailable`` to act like a broker that is
down: publishing then raises :class:`Unavailable`.

:class:`InMemoryTransactionalRunQueue` also plays a queue kept in the database (the postgres
backend): ``publish_within`` stages messages in an in-memory unit of work, and they appear when
it commits.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery, RunMessage
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_application.testing.unit_of_work import InMemoryUnitOfWork


@dataclass(order=True, slots=True)
class _Entry:
    rank: tuple[int, int]
    message: RunMessage = field(compare=False)
    redelivered: bool = field(default=False, compare=False)


class InMemoryRunQueue:
    def __init__(self) -> None:
        self.published: list[RunMessage] = []
        self.acked: list[RunMessage] = []
        self.nacked: list[tuple[RunMessage, bool]] = []
        self.deleted: list[str] = []
        self.unavailable = False
        self._ready: dict[str, list[_Entry]] = {}
        self._unacked: dict[int, tuple[Delivery, set[int]]] = {}
        self._seq = itertools.count()
        self._waiters: list[asyncio.Future[None]] = []

    # -- producer --------------------------------------------------------------------------------

    async def publish(self, message: RunMessage) -> None:
        if self.unavailable:
            raise Unavailable("the in-memory broker is marked unavailable", dependency="broker")
        self.published.append(message)
        self._push(message, redelivered=False)

    async def publish_many(self, messages: Sequence[RunMessage]) -> None:
        if self.unavailable:
            raise Unavailable("the in-memory broker is marked unavailable", dependency="broker")
        for message in messages:
            await self.publish(message)

    # -- consumer --------------------------------------------------------------------------------

    async def consume(
        self, queues: Sequence[str], *, prefetch: int
    ) -> AsyncGenerator[Delivery, None]:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        mine: set[int] = set()
        try:
            while True:
                delivery = self._take(queues, mine, prefetch)
                if delivery is None:
                    await self._wait()
                    continue
                yield delivery
        finally:
            for tag in list(mine):
                held, _ = self._unacked.pop(tag)
                self._push(held.message, redelivered=True)

    def get_nowait(self, queues: Sequence[str]) -> Delivery | None:
        """Take one delivery without waiting (for tests that drive a worker step by step)."""
        return self._take(queues, set(), prefetch=1)

    async def ack(self, delivery: Delivery) -> None:
        held = self._release(delivery)
        self.acked.append(held.message)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        held = self._release(delivery)
        self.nacked.append((held.message, requeue))
        if requeue:
            self._push(held.message, redelivered=True)

    async def depth(self, queue: str) -> int:
        return len(self._ready.get(queue, ()))

    async def delete_if_empty(self, queue: str) -> bool:
        """Records the deleted queues in ``deleted``."""
        if self.unavailable:
            raise Unavailable("the in-memory broker is marked unavailable", dependency="broker")
        if self._ready.get(queue) or any(
            d.message.queue == queue for d, _ in self._unacked.values()
        ):
            return False
        self._ready.pop(queue, None)
        self.deleted.append(queue)
        return True

    def ready(self, queue: str) -> list[RunMessage]:
        """The messages waiting in ``queue``, in delivery order."""
        return [entry.message for entry in sorted(self._ready.get(queue, ()))]

    @property
    def unacked(self) -> list[RunMessage]:
        return [delivery.message for delivery, _ in self._unacked.values()]

    # -- internals -------------------------------------------------------------------------------

    def _push(self, message: RunMessage, *, redelivered: bool) -> None:
        entry = _Entry((-message.priority, next(self._seq)), message, redelivered)
        heapq.heappush(self._ready.setdefault(message.queue, []), entry)
        self._wake_all()

    def _take(self, queues: Sequence[str], mine: set[int], prefetch: int) -> Delivery | None:
        if len(mine) >= prefetch:
            return None
        heads = [(heap[0], name) for name in queues if (heap := self._ready.get(name))]
        if not heads:
            return None
        _, name = min(heads)
        entry = heapq.heappop(self._ready[name])
        tag = next(self._seq)
        delivery = Delivery(message=entry.message, tag=tag, redelivered=entry.redelivered)
        self._unacked[tag] = (delivery, mine)
        mine.add(tag)
        return delivery

    def _release(self, delivery: Delivery) -> Delivery:
        if not isinstance(delivery.tag, int) or delivery.tag not in self._unacked:
            raise ValueError("delivery is not outstanding (already acked, nacked or unknown)")
        held, owner = self._unacked.pop(delivery.tag)
        owner.discard(delivery.tag)
        self._wake_all()
        return held

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


class InMemoryTransactionalRunQueue(InMemoryRunQueue):
    """A ``TransactionalRunQueue``: messages staged with ``publish_within`` join the unit of
    work's transaction — published at its commit, gone with a rollback. ``staged`` records each
    call's messages; ``published`` only what a commit (or a plain publish) let through."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[list[RunMessage]] = []

    async def publish_within(self, uow: UnitOfWork, messages: Sequence[RunMessage]) -> bool:
        if not isinstance(uow, InMemoryUnitOfWork):
            return False
        if self.unavailable:
            raise Unavailable("the in-memory database queue is unavailable", dependency="broker")
        batch = list(messages)
        self.staged.append(batch)

        def deliver() -> None:
            for message in batch:
                self.published.append(message)
                self._push(message, redelivered=False)

        uow.on_commit(deliver)
        return True
