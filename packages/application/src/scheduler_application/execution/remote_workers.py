"""The worker protocol for workers that reach the scheduler over HTTP instead of the database.

It delegates to the same :class:`ExecutionService` and :class:`WorkerService` the in-process
workers use, adding what a remote caller needs:

* the role check (only ``worker`` and ``admin``);
* the binding of a worker to the credential that registered it: every later call for that
  worker id from another credential (another API key, another user, even an admin) is answered
  :class:`NotFound`, exactly like an unknown worker — so worker ids cannot be probed, and one
  credential cannot claim, heartbeat, complete, release or deregister for another's worker.
  In-process workers are bound to no credential and cannot be spoken for over HTTP at all;
* the holder check on outcomes (heartbeats never renew a lease the worker does not hold);
* caps on the output and error text an outcome carries, like the in-process executors' caps;
* a long-poll claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from scheduler_application.accounts.access import Principal, ensure_runs_work
from scheduler_application.errors import Conflict, NotFound
from scheduler_application.execution.output_caps import (
    DEFAULT_ERROR_LIMIT,
    DEFAULT_OUTPUT_LIMIT,
    cap_text,
)
from scheduler_application.execution.retries import Settlement
from scheduler_application.execution.service import (
    RELEASE_REASON,
    ActiveRun,
    ClaimedRun,
    ExecutionService,
    HeartbeatReply,
)
from scheduler_application.execution.workers import RegisterWorker, WorkerService
from scheduler_application.ports.executor import ExecutionResult
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
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
        output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT,
        error_limit_bytes: int = DEFAULT_ERROR_LIMIT,
    ) -> None:
        """``output_limit_bytes`` and ``error_limit_bytes``: what an outcome's output and error
        are cut to (``worker.output_limit_bytes`` for the output, as in-process)."""
        self._uow_factory = uow_factory
        self._execution = execution
        self._workers = workers
        self._poll = poll_interval.total_seconds()
        self._output_limit = output_limit_bytes
        self._error_limit = error_limit_bytes

    async def register(self, command: RegisterWorker, *, principal: Principal) -> Worker:
        """A new worker, bound to ``principal``'s credential."""
        ensure_runs_work(principal)
        return await self._workers.register(replace(command, principal_id=principal.credential))

    async def deregister(self, worker_id: str, *, principal: Principal) -> Worker:
        ensure_runs_work(principal)
        await self._worker(worker_id, principal)
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
            worker = await self._worker(worker_id, principal)
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
        """Renew the leases the worker holds; runs it does not hold (another worker's, or
        stale) are never renewed and come back in ``stop``."""
        ensure_runs_work(principal)
        await self._worker(worker_id, principal)
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
        """Record the outcome (output and error capped); Conflict unless ``worker_id`` holds
        the attempt under ``token``."""
        ensure_runs_work(principal)
        await self._worker(worker_id, principal)
        await self._ensure_holder(run_id, worker_id)
        capped = replace(
            result,
            output=cap_text(result.output, self._output_limit),
            error=cap_text(result.error, self._error_limit, what="error"),
        )
        return await self._execution.complete(run_id, token, capped, conceal_task_secrets=True)

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
        await self._worker(worker_id, principal)
        await self._ensure_holder(run_id, worker_id)
        return await self._execution.release(run_id, token, reason=reason[:500])

    async def _worker(self, worker_id: str, principal: Principal) -> Worker:
        """The worker, if ``principal`` registered it; NotFound otherwise (the same answer as
        for an unknown id, so another credential's workers cannot be told to exist)."""
        async with self._uow_factory() as uow:
            worker = await uow.workers.get(worker_id)
        if worker is None or worker.principal_id != principal.credential:
            raise NotFound(f"worker {worker_id} is not registered", field="worker_id")
        return worker

    async def _ensure_holder(self, run_id: str, worker_id: str) -> None:
        async with self._uow_factory() as uow:
            run = await uow.runs.get(run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found", field="run_id")
        if run.worker_id != worker_id:
            raise Conflict(f"run {run_id} is not held by worker {worker_id}", field="worker_id")
