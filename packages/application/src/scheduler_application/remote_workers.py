"""The worker protocol for workers that reach the scheduler over HTTP instead of the database.

It delegates to the same :class:`ExecutionService` and :class:`WorkerService` the in-process
workers use, adding what a remote caller needs: the role check (only ``worker`` and ``admin``),
a long-poll claim, and the holder check on outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from scheduler_application.auth_context import Principal, ensure_runs_work
from scheduler_application.errors import Conflict, NotFound
from scheduler_application.execution import (
    RELEASE_REASON,
    ActiveRun,
    ClaimedRun,
    ExecutionService,
    HeartbeatReply,
)
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.retries import Settlement
from scheduler_application.workers import RegisterWorker, WorkerService
from scheduler_domain.accounts import Role
from scheduler_domain.errors import ValidationError
from scheduler_domain.worker import Worker, WorkerStatus

MAX_WAIT = timedelta(seconds=30)
DEFAULT_POLL = timedelta(milliseconds=250)


class RemoteWorkerService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        execution: ExecutionService,
        workers: WorkerService,
        poll_interval: timedelta = DEFAULT_POLL,
    ) -> None:
        self._uow_factory = uow_factory
        self._execution = execution
        self._workers = workers
        self._poll = poll_interval.total_seconds()

    async def register(self, command: RegisterWorker, *, principal: Principal) -> Worker:
        ensure_runs_work(principal)
        return await self._workers.register(command)

    async def deregister(self, worker_id: str, *, principal: Principal) -> Worker:
        ensure_runs_work(principal)
        return await self._workers.deregister(worker_id)

    async def claim(
        self, worker_id: str, *, principal: Principal, wait: timedelta = timedelta(0)
    ) -> ClaimedRun | None:
        """The most urgent queued run of the worker's queues, waiting up to ``wait`` for one to
        appear. None when nothing came, or the worker is draining or offline."""
        ensure_runs_work(principal)
        if not timedelta(0) <= wait <= MAX_WAIT:
            raise ValidationError(
                f"wait must be between 0 and {int(MAX_WAIT.total_seconds())} seconds", field="wait"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait.total_seconds()
        while True:
            worker = await self._worker(worker_id)
            if worker.status is not WorkerStatus.ONLINE:
                return None
            claimed = await self._execution.claim_next(worker_id=worker.id, queues=worker.queues)
            if claimed is not None and claimed.secret_error is not None:
                await self._fail_unopened(claimed)
                continue
            remaining = deadline - loop.time()
            if claimed is not None and principal.role is not Role.WORKER:
                # An admin may speak the protocol, but only a worker credential is handed
                # the task's secrets.
                claimed = replace(claimed, secret_env={})
            if claimed is not None or remaining <= 0:
                return claimed
            await asyncio.sleep(min(self._poll, remaining))

    async def _fail_unopened(self, claimed: ClaimedRun) -> None:
        """A run whose secrets cannot be opened here cannot run anywhere: it fails (and is
        retried by its policy, perhaps after the key is fixed) without reaching a worker."""
        await self._execution.complete(
            claimed.run.id,
            claimed.token,
            ExecutionResult(status="failed", error=claimed.secret_error),
        )

    async def heartbeat(
        self, worker_id: str, active: Sequence[ActiveRun], *, principal: Principal
    ) -> HeartbeatReply:
        ensure_runs_work(principal)
        return await self._execution.heartbeat(worker_id, active)

    async def complete(
        self,
        run_id: str,
        *,
        worker_id: str,
        token: int,
        result: ExecutionResult,
        principal: Principal,
    ) -> Settlement:
        """Record the outcome; Conflict unless ``worker_id`` holds the attempt under ``token``."""
        ensure_runs_work(principal)
        await self._ensure_holder(run_id, worker_id)
        return await self._execution.complete(run_id, token, result, conceal_task_secrets=True)

    async def release(
        self,
        run_id: str,
        *,
        worker_id: str,
        token: int,
        principal: Principal,
        reason: str = RELEASE_REASON,
    ) -> Settlement:
        ensure_runs_work(principal)
        await self._ensure_holder(run_id, worker_id)
        return await self._execution.release(run_id, token, reason=reason[:500])

    async def _worker(self, worker_id: str) -> Worker:
        async with self._uow_factory() as uow:
            worker = await uow.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} is not registered", field="worker_id")
        return worker

    async def _ensure_holder(self, run_id: str, worker_id: str) -> None:
        async with self._uow_factory() as uow:
            run = await uow.runs.get(run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found", field="run_id")
        if run.worker_id != worker_id:
            raise Conflict(f"run {run_id} is not held by worker {worker_id}", field="worker_id")
