"""Worker registry: workers register and deregister themselves; operators list, drain and
undrain them; workers offline longer than a retention are retired (their rows deleted, their
direct queues too once empty).

Heartbeats are part of the worker protocol (:mod:`scheduler_application.execution.service`),
since one heartbeat both proves the worker alive and renews the leases of its runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta

from scheduler_application.accounts.access import (
    Principal,
    ensure_can_read_tasks,
    ensure_operates_workers,
)
from scheduler_application.errors import Conflict, NotFound
from scheduler_application.events.log import record_event
from scheduler_application.execution.retries import Settlement, settle_failed_attempt
from scheduler_application.observation import observe_settlement
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_domain.status import RunStatus
from scheduler_domain.worker import Worker, WorkerOffline, WorkerStatus

logger = logging.getLogger("scheduler.workers")

DEREGISTER_REASON = "worker deregistered"
#: A dead worker's direct queue is swept of duplicates until it stays quiet this long (s), or
#: this many messages were looked at.
SWEEP_IDLE = 1.0
SWEEP_LIMIT = 1000


@dataclass(slots=True)
class Retirement:
    """One pass of :meth:`WorkerService.retire_offline`: the workers whose rows were deleted,
    and those kept for now with the reason (runs or messages still wait on their direct queue)."""

    retired: list[Worker] = field(default_factory=list)
    kept: list[tuple[Worker, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterWorker:
    name: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    capacity: int
    labels: frozenset[str] = field(default_factory=frozenset)
    software_version: str = ""
    #: The credential registering the worker over HTTP (None for in-process workers).
    principal_id: str | None = None


class WorkerService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        rng: random.Random | None = None,
        observer: RunObserver = NO_OBSERVER,
        queue: RunQueue | None = None,
    ) -> None:
        """``queue``: where the workers' direct queues live; given, a deregistered or retired
        worker's direct queue is deleted once it is empty (never while it holds a message)."""
        self._uow_factory = uow_factory
        self._clock = clock
        self._rng = rng
        self._observer = observer
        self._queue = queue

    async def register(self, command: RegisterWorker) -> Worker:
        """A new worker row (a restarted process registers again and gets a new id)."""
        now = self._clock.now()
        worker = Worker(
            name=command.name,
            hostname=command.hostname,
            pid=command.pid,
            queues=tuple(command.queues),
            capacity=command.capacity,
            labels=frozenset(command.labels),
            software_version=command.software_version,
            principal_id=command.principal_id,
            started_at=now,
            heartbeat_at=now,
        )
        async with self._uow_factory() as uow:
            await uow.workers.add(worker)
            await uow.commit()
        return worker

    async def drain(self, worker_id: str, *, principal: Principal) -> Worker:
        """Ask a worker to stop taking work; it sees ``draining`` on its next heartbeat, stops
        consuming, finishes what it holds and stays registered until undrained."""
        ensure_operates_workers(principal)
        async with self._uow_factory() as uow:
            worker = await _load(uow, worker_id, lock=True)
            worker.drain()
            await uow.workers.update(worker)
            await record_event(
                uow,
                "worker.drained",
                at=self._clock.now(),
                actor=principal.actor,
                subject=worker.id,
                detail={"name": worker.name},
            )
            await uow.commit()
        return worker

    async def undrain(self, worker_id: str, *, principal: Principal) -> Worker:
        """Let a draining worker take work again (it resumes on its next heartbeat). Conflict
        for an offline worker: that process is gone, and its successor registered anew."""
        ensure_operates_workers(principal)
        async with self._uow_factory() as uow:
            worker = await _load(uow, worker_id, lock=True)
            try:
                worker.undrain()
            except WorkerOffline as error:
                raise Conflict(error.message, field="worker_id") from error
            await uow.workers.update(worker)
            await record_event(
                uow,
                "worker.undrained",
                at=self._clock.now(),
                actor=principal.actor,
                subject=worker.id,
                detail={"name": worker.name},
            )
            await uow.commit()
        return worker

    async def deregister(self, worker_id: str) -> Worker:
        """The worker is going away. Runs it still holds are lost and retried at once, rather
        than waiting for their leases to expire."""
        now = self._clock.now()
        settled: list[Settlement] = []
        async with self._uow_factory() as uow:
            worker = await _load(uow, worker_id, lock=True)
            worker.go_offline(now=now)
            await uow.workers.update(worker)
            for run in await uow.runs.running_on_worker(worker_id):
                read_version = run.version
                await uow.events.add(run.lose(now=now, reason=DEREGISTER_REASON))
                task = await uow.tasks.get(run.task_id)
                retry = await settle_failed_attempt(
                    uow,
                    run,
                    task=task,
                    now=now,
                    actor=f"worker:{worker_id}",
                    rng=self._rng,
                    delay=timedelta(0),
                )
                await uow.runs.update(run, expected_version=read_version)
                settled.append(Settlement(run, retry))
            await uow.commit()
        for settlement in settled:
            observe_settlement(self._observer, settlement, outcome=RunStatus.LOST)
        await self._delete_direct_queue(worker)
        return worker

    async def retire_offline(self, retention: timedelta, limit: int) -> Retirement:
        """Delete up to ``limit`` workers offline for longer than ``retention`` (oldest first).

        A worker is kept while a run is queued on its direct queue (the relay re-routes such a
        run to a live worker and publishes it again, and the worker goes on a later pass). The
        messages left on its direct queue whose run is no longer queued there are duplicates
        and are taken out; the queue is deleted only when empty, so no run loses its message.
        Runs keep the id of the worker that ran them (it is not a foreign key), so their
        history survives the worker's row."""
        report = Retirement()
        now = self._clock.now()
        cutoff = now - retention
        async with self._uow_factory() as uow:
            candidates = await uow.workers.offline_since_before(cutoff, limit=limit)
        for worker in candidates:
            if not worker.is_retired(now=now, retention=retention):
                continue
            async with self._uow_factory() as uow:
                waiting = await uow.runs.queued_in([worker.direct_queue], limit=1)
            if waiting:
                report.kept.append((worker, "runs are queued on its direct queue"))
                continue
            if not await self._delete_direct_queue(worker) and not (
                await self._sweep_stale(worker.direct_queue)
                and await self._delete_direct_queue(worker)
            ):
                report.kept.append(
                    (worker, f"its direct queue {worker.direct_queue} holds messages")
                )
                continue
            async with self._uow_factory() as uow:
                deleted = await uow.workers.delete_offline(worker.id, before=cutoff)
                await uow.commit()
            if deleted:
                report.retired.append(worker)
        return report

    async def _sweep_stale(self, queue: str) -> bool:
        """Take out of a dead worker's direct queue the messages that are only duplicates: their
        run is no longer queued there (the relay re-routed it, and published it again, when the
        worker stopped taking work; or it ended). The first message whose run still waits there
        is put back and the sweep stops. True when something was taken out."""
        if self._queue is None:
            return False
        dropped = 0
        consumer = self._queue.consume([queue], prefetch=1)
        deliveries = aiter(consumer)
        try:
            for _ in range(SWEEP_LIMIT):
                try:
                    delivery = await asyncio.wait_for(anext(deliveries), timeout=SWEEP_IDLE)
                except (TimeoutError, StopAsyncIteration):
                    break
                async with self._uow_factory() as uow:
                    run = await uow.runs.get(delivery.message.run_id)
                if run is not None and run.status is RunStatus.QUEUED and run.queue == queue:
                    await self._queue.nack(delivery, requeue=True)
                    break
                await self._queue.ack(delivery)
                dropped += 1
        except Exception as error:  # the next pass tries again
            logger.warning("sweeping %s failed: %s: %s", queue, type(error).__name__, error)
        finally:
            close = getattr(consumer, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        if dropped:
            logger.info("dropped %d duplicate messages from %s", dropped, queue)
        return dropped > 0

    async def _delete_direct_queue(self, worker: Worker) -> bool:
        """True when the worker's direct queue is gone (or there is no queue to ask)."""
        if self._queue is None:
            return True
        try:
            return await self._queue.delete_if_empty(worker.direct_queue)
        except Exception as error:  # the retirement loop tries again later
            logger.warning(
                "could not delete the direct queue %s: %s: %s",
                worker.direct_queue,
                type(error).__name__,
                error,
            )
            return False

    async def mark_silent_offline(self, silent_for: timedelta) -> list[Worker]:
        """Workers that have not heartbeated for ``silent_for`` are offline (their runs are left to
        the reaper, which sees their leases expire)."""
        now = self._clock.now()
        gone: list[Worker] = []
        async with self._uow_factory() as uow:
            for worker in await uow.workers.list():
                if worker.status is not WorkerStatus.OFFLINE and not worker.is_alive(
                    now=now, timeout=silent_for
                ):
                    worker.go_offline(now=worker.heartbeat_at)
                    await uow.workers.update(worker)
                    gone.append(worker)
            if gone:
                await uow.commit()
        return gone

    async def list(
        self, *, principal: Principal, status: WorkerStatus | None = None
    ) -> list[Worker]:
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            return await uow.workers.list(status=status)

    async def get(self, worker_id: str, *, principal: Principal) -> Worker:
        ensure_can_read_tasks(principal)
        async with self._uow_factory() as uow:
            return await _load(uow, worker_id)


async def _load(uow: UnitOfWork, worker_id: str, *, lock: bool = False) -> Worker:
    """The worker; ``lock`` holds its row for a write (see ``get_for_update``)."""
    worker = await (uow.workers.get_for_update if lock else uow.workers.get)(worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id} not found", field="worker_id")
    return worker
