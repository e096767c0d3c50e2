"""The in-process queue: the embedded default (mode ``all``) and the reference for the contract.

Higher priority first, then publication order. A consumer holds at most ``prefetch`` unacked
deliveries. Closing a consumer (or the queue) puts its unacked deliveries back where they were,
marked redelivered, and a later ack of one of them is ignored, as a broker ignores acks on a
closed channel. A message delivered more than ``max_deliveries`` times, or nacked without
requeue, is dead-lettered (see :meth:`MemoryRunQueue.dead_letters`). Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery, RunMessage
from scheduler_infrastructure.queues.priorities import clamp


@dataclass(slots=True, eq=False)
class _Entry:
    message: RunMessage
    rank: tuple[int, int]
    deliveries: int = 0


@dataclass(slots=True, eq=False)
class _Tag:
    consumer: MemoryConsumer
    entry: _Entry


class MemoryRunQueue:
    def __init__(self, *, max_deliveries: int = 5) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.max_deliveries = max_deliveries
        self._ready: dict[str, list[tuple[tuple[int, int], _Entry]]] = {}
        self._dead: dict[str, list[RunMessage]] = {}
        self._consumers: dict[str, set[MemoryConsumer]] = {}
        self._seq = itertools.count()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every consumer (their iterations end) and refuse further publishing."""
        self._closed = True
        consumers = {consumer for group in self._consumers.values() for consumer in group}
        for consumer in consumers:
            await consumer.aclose()

    # -- RunQueue --------------------------------------------------------------------------------

    async def publish(self, message: RunMessage) -> None:
        self._check_open()
        self._enqueue(message)

    async def publish_many(self, messages: Sequence[RunMessage]) -> None:
        self._check_open()
        for message in messages:
            self._enqueue(message)

    def consume(self, queues: Sequence[str], *, prefetch: int) -> MemoryConsumer:
        self._check_open()
        consumer = MemoryConsumer(self, queues=queues, prefetch=prefetch)
        for queue in consumer.queues:
            self._consumers.setdefault(queue, set()).add(consumer)
        return consumer

    async def ack(self, delivery: Delivery) -> None:
        self._settle(delivery)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        entry = self._settle(delivery)
        if entry is None:
            return
        if requeue:
            self._push(entry)
        else:
            self._bury(entry)

    async def depth(self, queue: str) -> int:
        return len(self._ready.get(queue, ()))

    async def delete_if_empty(self, queue: str) -> bool:
        held = any(
            tag.entry.message.queue == queue
            for consumer in self._consumers.get(queue, ())
            for tag in consumer.unacked
        )
        if self._ready.get(queue) or self._dead.get(queue) or held:
            return False
        self._ready.pop(queue, None)
        self._dead.pop(queue, None)
        return True

    # -- beyond the port -------------------------------------------------------------------------

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[RunMessage]:
        """Dead-lettered messages of ``queue``, oldest first."""
        return self._dead.get(queue, [])[:limit]

    # -- internals -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the in-memory queue is closed", dependency="broker")

    def _enqueue(self, message: RunMessage) -> None:
        self._push(_Entry(message, (-clamp(message.priority), next(self._seq))))

    def _push(self, entry: _Entry) -> None:
        queue = entry.message.queue
        heapq.heappush(self._ready.setdefault(queue, []), (entry.rank, entry))
        for consumer in self._consumers.get(queue, ()):
            consumer.wake()

    def _bury(self, entry: _Entry) -> None:
        self._dead.setdefault(entry.message.queue, []).append(entry.message)

    def _take(self, queues: Sequence[str]) -> _Entry | None:
        best: list[tuple[tuple[int, int], _Entry]] | None = None
        for queue in queues:
            heap = self._ready.get(queue)
            if heap and (best is None or heap[0][0] < best[0][0]):
                best = heap
        if best is None:
            return None
        _, entry = heapq.heappop(best)
        return entry

    def _settle(self, delivery: Delivery) -> _Entry | None:
        tag = delivery.tag
        if not isinstance(tag, _Tag):
            raise TypeError("not a delivery of this queue")
        return tag.entry if tag.consumer.settle(tag) else None

    def _forget(self, consumer: MemoryConsumer) -> None:
        for queue in consumer.queues:
            self._consumers.get(queue, set()).discard(consumer)


class MemoryConsumer:
    """The async iterator ``MemoryRunQueue.consume`` returns (also an async context manager)."""

    def __init__(self, owner: MemoryRunQueue, *, queues: Sequence[str], prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if not queues:
            raise ValueError("consume needs at least one queue")
        self.queues = tuple(dict.fromkeys(queues))
        self.prefetch = prefetch
        self._owner = owner
        self._unacked: set[_Tag] = set()
        self._event = asyncio.Event()
        self._closed = False

    def wake(self) -> None:
        self._event.set()

    @property
    def unacked(self) -> frozenset[_Tag]:
        return frozenset(self._unacked)

    def settle(self, tag: _Tag) -> bool:
        if tag not in self._unacked:
            return False
        self._unacked.discard(tag)
        self._event.set()
        return True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while not self._closed:
            delivery = self.take_nowait()
            if delivery is not None:
                return delivery
            self._event.clear()
            await self._event.wait()
        raise StopAsyncIteration

    def take_nowait(self) -> Delivery | None:
        """The next delivery if one is ready and the prefetch allows it, without waiting (a
        message past ``max_deliveries`` is dead-lettered on the way)."""
        while not self._closed and len(self._unacked) < self.prefetch:
            entry = self._owner._take(self.queues)
            if entry is None:
                return None
            entry.deliveries += 1
            if entry.deliveries > self._owner.max_deliveries:
                self._owner._bury(entry)
                continue
            tag = _Tag(self, entry)
            self._unacked.add(tag)
            return Delivery(message=entry.message, tag=tag, redelivered=entry.deliveries > 1)
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        unacked, self._unacked = self._unacked, set()
        for tag in sorted(unacked, key=lambda tag: tag.entry.rank):
            self._owner._push(tag.entry)
        self._event.set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
