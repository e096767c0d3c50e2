"""Group commit: concurrent callers share one round trip.

Acks arrive one by one from many in-flight runs; sending each on its own costs a round trip
apiece. :class:`GroupCommit` gathers the items submitted while a flush is in progress and sends
them together in the next one. Each caller still waits for the flush that carries its item (and
sees its error), so ``await ack(...)`` keeps its meaning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], *, max_batch: int = 1000):
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # The flush outlives a cancelled caller: other callers' items ride in the same batch.
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            done.add_done_callback(_retrieve)
            raise

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._flush([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, done in batch:
                    if not done.done():
                        done.cancel()
                raise
            except Exception as error:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def aclose(self) -> None:
        """Wait for the flushes already asked for."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)


def _retrieve(done: asyncio.Future[None]) -> None:
    """Mark the outcome of an abandoned flush as seen (no "never retrieved" warning)."""
    if not done.cancelled():
        done.exception()
