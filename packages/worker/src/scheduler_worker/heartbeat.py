"""The heartbeat: proves the worker alive, renews its runs' leases, and carries news back —
runs to stop (cancelled, reaped, re-claimed) and an operator's drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from scheduler_application.errors import Unavailable
from scheduler_application.execution import ExecutionService
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_domain.worker import WorkerStatus

logger = logging.getLogger("scheduler.worker")


class HeartbeatLoop:
    def __init__(
        self,
        *,
        execution: ExecutionService,
        worker_id: str,
        interval: timedelta,
        lease: timedelta,
        active: Callable[[], list[tuple[str, int]]],
        on_stop: Callable[[str], None],
        on_drain: Callable[[], None],
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._observer = observer
        self._execution = execution
        self._worker_id = worker_id
        self._interval = interval.total_seconds()
        self._lease = lease.total_seconds()
        self._active = active
        self._on_stop = on_stop
        self._on_drain = on_drain
        self._last_success = time.monotonic()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def beat(self) -> None:
        held = self._active()
        try:
            reply = await self._execution.heartbeat(self._worker_id, held)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if isinstance(error, Unavailable):
                self._observer.dependency_unavailable(error.dependency)
            silent = time.monotonic() - self._last_success
            logger.warning(
                "heartbeat failed (%s: %s) for %.1f s", type(error).__name__, error, silent
            )
            if silent >= self._lease:
                # Our leases have expired by now: the runs are someone else's to retry.
                for run_id, _ in held:
                    self._on_stop(run_id)
            return
        self._last_success = time.monotonic()
        for run_id in reply.stop:
            self._on_stop(run_id)
        if reply.status is WorkerStatus.DRAINING:
            self._on_drain()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.beat()
