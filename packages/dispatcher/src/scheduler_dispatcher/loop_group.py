"""A group of loops started together and stopped together: the dispatcher process's work
(:func:`scheduler_dispatcher.bootstrap.build_dispatcher` builds the group)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_dispatcher.loops import PeriodicLoop

logger = logging.getLogger("scheduler.dispatcher")


class LoopGroup:
    def __init__(
        self,
        *,
        loops: list[PeriodicLoop],
        observer: RunObserver = NO_OBSERVER,
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        """``observer`` hears of the outages the loops run into; ``on_stop`` runs after the
        loops stopped (the relay's background retries)."""
        self._loops = loops
        self._on_stop = list(on_stop)
        for loop in loops:
            loop.observer = observer
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()

    def loop(self, name: str) -> PeriodicLoop:
        return next(loop for loop in self._loops if loop.name == name)

    def stop(self) -> None:
        self._stopping.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def run(self) -> None:
        tasks = [asyncio.create_task(loop.run(), name=loop.name) for loop in self._loops]
        self._started.set()
        logger.info("dispatcher started: %s", ", ".join(loop.name for loop in self._loops))
        try:
            stopper = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for close in self._on_stop:
                await close()
            logger.info("dispatcher stopped")
