"""The heartbeat: proves the worker alive, renews its runs' leases, and carries news back —
runs to stop (cancelled, reaped, re-claimed) and an operator's drain or undrain.

Between heartbeats, a lighter check asks only which held runs must stop (one read by primary
key, and only while the worker holds runs), every ``stop_check_interval``: so a cancellation
or a ``replace`` stops the run's process within about that long, not within the heartbeat's
interval. It works the same on every database and queue backend, which a push (``NOTIFY``,
a control message) would not without one adapter per backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from scheduler_application.errors import NotFound, Unavailable
from scheduler_application.execution.service import ExecutionService
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
        on_resume: Callable[[], None] = lambda: None,
        on_gone: Callable[[], None] = lambda: None,
        observer: RunObserver = NO_OBSERVER,
        stop_check_interval: timedelta | None = None,
        run_writes: asyncio.Lock | None = None,
    ) -> None:
        """``stop_check_interval``: how often to ask which held runs must stop (None: only at
        heartbeats). ``run_writes``: held while the leases are renewed, as the worker holds it
        while its outcomes are written (:class:`~scheduler_worker.runtime.WorkerRuntime`)."""
        self._run_writes = run_writes if run_writes is not None else asyncio.Lock()
        self._observer = observer
        self._stop_check = (
            stop_check_interval.total_seconds() if stop_check_interval is not None else None
        )
        self._execution = execution
        self._worker_id = worker_id
        self._interval = interval.total_seconds()
        self._lease = lease.total_seconds()
        self._active = active
        self._on_stop = on_stop
        self._on_drain = on_drain
        self._on_resume = on_resume
        self._on_gone = on_gone
        self._last_success = time.monotonic()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(self._loop())]
        if self._stop_check is not None and self._stop_check < self._interval:
            tasks.append(asyncio.create_task(self._watch(self._stop_check)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def beat(self) -> None:
        held = self._active()
        try:
            async with self._run_writes:
                reply = await self._execution.heartbeat(self._worker_id, held)
        except asyncio.CancelledError:
            raise
        except NotFound:
            # Retired while it was cut off for longer than the workers' retention: this process
            # no longer exists for the scheduler, its leases are gone. Stop (a supervisor
            # starts a fresh worker) rather than go on claiming runs nobody sees it hold.
            logger.error("worker %s is no longer registered (retired); stopping", self._worker_id)
            for run_id, _ in held:
                self._on_stop(run_id)
            self._on_gone()
            return
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
        elif reply.status is WorkerStatus.ONLINE:
            self._on_resume()

    async def check_stops(self) -> None:
        """Stop the held runs that were cancelled or taken away since the last look; an error
        is left to the next look (and to the heartbeat, which owns the leases)."""
        held = self._active()
        if not held:
            return
        try:
            stop = await self._execution.runs_to_stop(self._worker_id, held)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.debug("checking for runs to stop failed (%s: %s)", type(error).__name__, error)
            return
        for run_id in stop:
            self._on_stop(run_id)

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.check_stops()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.beat()
