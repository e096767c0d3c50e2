"""The consumer side shared by the network adapters: background fetching into a bounded buffer.

A :class:`BufferedConsumer` is what ``RunQueue.consume`` returns: an async iterator of
deliveries that is also an async context manager. Background tasks fetch deliveries into a
buffer; a delivery counts as unacked from the moment it is fetched until it is acked or nacked,
so buffered plus handed-out deliveries never exceed ``prefetch``. Closing the consumer cancels
its tasks and ends the iteration; what happens to its unacked deliveries is the backend's
business (see each adapter).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Self

from scheduler_application.ports.queue import Delivery

log = logging.getLogger("scheduler.queues")
CLOSE_TIMEOUT_SECONDS = 10.0


class BufferedConsumer:
    def __init__(self, *, queues: Sequence[str], prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if not queues:
            raise ValueError("consume needs at least one queue")
        self.queues = tuple(dict.fromkeys(queues))
        self.prefetch = prefetch
        self._buffer: deque[Delivery] = deque()
        self._unacked: set[object] = set()
        self._readable = asyncio.Event()
        self._settled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._failure: BaseException | None = None
        self._on_close: list[Callable[[BufferedConsumer], None]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, on_close: Callable[[BufferedConsumer], None] | None = None) -> Self:
        if on_close is not None:
            self._on_close.append(on_close)
        for loop in self._loops():
            self._tasks.append(asyncio.create_task(self._guard(loop)))
        return self

    def _loops(self) -> Sequence[Coroutine[Any, Any, None]]:
        """The background coroutines that feed the buffer (and keep locks alive)."""
        return ()

    async def _shutdown(self, buffered: list[Delivery]) -> None:
        """Backend clean-up after the tasks stopped; ``buffered`` were never handed out."""

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_SECONDS)
            if stuck:
                log.error("queue consumer tasks did not stop within %s s", CLOSE_TIMEOUT_SECONDS)
        buffered = list(self._buffer)
        self._buffer.clear()
        for delivery in buffered:
            self._unacked.discard(delivery.tag)
        try:
            await self._shutdown(buffered)
        except Exception:
            log.warning("queue consumer clean-up failed", exc_info=True)
        self._readable.set()
        for callback in self._on_close:
            callback(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- iteration -------------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            while self._buffer:
                delivery = self._buffer.popleft()
                if self._is_stale(delivery):
                    self._unacked.discard(delivery.tag)
                    continue
                return delivery
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    def _is_stale(self, delivery: Delivery) -> bool:
        """True for a buffered delivery that can no longer be acked (dropped, not handed out)."""
        return False

    # -- bookkeeping used by the fetch loops and by the adapter's ack/nack -----------------------

    @property
    def free(self) -> int:
        """How many more deliveries may be fetched without exceeding ``prefetch``."""
        return self.prefetch - len(self._unacked)

    @property
    def unacked_tags(self) -> list[object]:
        return list(self._unacked)

    def push(self, delivery: Delivery) -> None:
        self._unacked.add(delivery.tag)
        self._buffer.append(delivery)
        self._readable.set()

    def settle(self, tag: object) -> bool:
        """Forget an acked or nacked delivery; False if it was not (or no longer) unacked."""
        try:
            self._unacked.remove(tag)
        except KeyError:
            return False
        self._settled.set()
        return True

    async def wait_for_capacity(self, *, gather: float = 0.0) -> None:
        """Return once ``free`` is positive. With ``gather``, a consumer that was full waits up
        to that many seconds for half its capacity to free up, so that under load it fetches in
        batches instead of one delivery per round trip."""
        if self.free > 0:
            return
        while self.free <= 0:
            self._settled.clear()
            await self._settled.wait()
        if gather <= 0:
            return
        deadline = asyncio.get_running_loop().time() + gather
        while self.free < (self.prefetch + 1) // 2:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._settled.clear()
            await wait_at_most(self._settled, remaining)

    async def _guard(self, loop: Coroutine[Any, Any, None]) -> None:
        try:
            await loop
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("queue consumer stopped on an unexpected error")
            self._failure = error
            self._readable.set()


async def wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` for up to ``seconds``; True if it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives just as the
    event fires, and a consumer task that misses its cancellation never stops.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
