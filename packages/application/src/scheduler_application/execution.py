"""The worker protocol: claim a run under a lease, keep it alive, report how it ended.

Workers reaching the database call these directly; the API's worker endpoints call the same
methods, so both paths share one set of rules. The fencing token is the run's version after the
claim: heartbeats and outcomes carry it, and once the attempt moved on (cancelled, reaped, claimed
again) an old token is refused with :class:`Conflict`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from scheduler_application.errors import Conflict, NotFound
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from scheduler_application.retries import Settlement, settle_failed_attempt
from scheduler_domain.errors import IllegalTransition, LeaseLost, StaleFencingToken
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus
from scheduler_domain.task import Task
from scheduler_domain.worker import WorkerStatus

T = TypeVar("T")
DEFAULT_LEASE = timedelta(seconds=30)
RELEASE_REASON = "released by draining worker"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedRun:
    """A run now held by the worker, with what it needs to execute it."""

    run: TaskRun
    executor: str
    params: dict[str, Any]
    timeout_seconds: float | None

    @property
    def token(self) -> int:
        """The fencing token to present with heartbeats and the outcome."""
        return self.run.version

    def context(self) -> ExecutionContext:
        return ExecutionContext(
            run_id=self.run.id,
            task_id=self.run.task_id,
            attempt=self.run.attempt,
            params=dict(self.params),
            timeout_seconds=self.timeout_seconds,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveRun:
    run_id: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatReply:
    """``stop``: runs the worker must abandon (cancelled, reaped, or claimed by another).
    ``status``: the worker's own status, so it notices an operator's drain."""

    stop: list[str]
    status: WorkerStatus


class ExecutionService:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        rng: random.Random | None = None,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("lease must be positive")
        self._uow_factory = uow_factory
        self._clock = clock
        self._rng = rng
        self._lease = lease

    async def claim(self, run_id: str, *, worker_id: str) -> ClaimedRun | None:
        """Take a delivered run; None when it is no longer queued (a duplicate delivery, a
        cancelled run, another worker won): the caller acks the message and drops it."""
        now = self._clock.now()
        try:
            async with self._uow_factory() as uow:
                run = await uow.runs.claim(run_id, worker_id=worker_id, now=now, lease=self._lease)
                return await self._start(uow, run, worker_id)
        except Conflict:
            return None

    async def claim_next(self, *, worker_id: str, queues: Sequence[str]) -> ClaimedRun | None:
        """Take the most urgent queued run of ``queues`` (the HTTP worker protocol's poll)."""
        now = self._clock.now()
        try:
            async with self._uow_factory() as uow:
                run = await uow.runs.claim_next(
                    queues=queues, worker_id=worker_id, now=now, lease=self._lease
                )
                return await self._start(uow, run, worker_id)
        except Conflict:
            return None

    async def _start(
        self, uow: UnitOfWork, run: TaskRun | None, worker_id: str
    ) -> ClaimedRun | None:
        if run is None:
            return None
        task = await uow.tasks.get(run.task_id)
        if task is None:
            return None  # the task was deleted under us: roll back, nothing to run
        await uow.events.add(_claim_event(run, worker_id))
        await uow.commit()
        return ClaimedRun(
            run=run,
            executor=task.executor,
            params=dict(task.params),
            timeout_seconds=task.timeout.total_seconds() if task.timeout is not None else None,
        )

    async def heartbeat(
        self, worker_id: str, active: Sequence[ActiveRun | tuple[str, int]]
    ) -> HeartbeatReply:
        """Renew the lease of every run the worker holds (``(run_id, token)`` pairs); tell it
        which ones to stop: cancelled, reaped, or re-claimed under a newer token."""
        now = self._clock.now()
        held = [
            item if isinstance(item, ActiveRun) else ActiveRun(run_id=item[0], token=item[1])
            for item in active
        ]
        async with self._uow_factory() as uow:
            worker = await uow.workers.get(worker_id)
            if worker is None:
                raise NotFound(f"worker {worker_id} is not registered", field="worker_id")
            stop: list[str] = []
            for item in held:
                renewed = await uow.runs.renew_lease(
                    item.run_id, token=item.token, now=now, lease=self._lease
                )
                if not renewed:
                    stop.append(item.run_id)
            worker.record_heartbeat(now=now, active_runs=len(held) - len(stop))
            await uow.workers.update(worker)
            await uow.commit()
        return HeartbeatReply(stop=stop, status=worker.status)

    async def complete(self, run_id: str, token: int, result: ExecutionResult) -> Settlement:
        """Record the outcome; a failure or timeout gets its retry (pending until the backoff
        has passed) or, with no attempts left, is dead-lettered — all in one transaction."""
        now = self._clock.now()
        async with self._uow_factory() as uow:
            run = await _held_run(uow, run_id)
            read_version = run.version
            event = _fenced(
                lambda: run.finish(
                    RunStatus(result.status),
                    token=token,
                    now=now,
                    result=result.result or None,
                    error=result.error,
                    output=result.output,
                )
            )
            await uow.events.add(event)
            retry = await self._settle(uow, run, now=now, actor=event.actor)
            await uow.runs.update(run, expected_version=read_version)
            await uow.commit()
        return Settlement(run, retry)

    async def release(self, run_id: str, token: int, *, reason: str = RELEASE_REASON) -> Settlement:
        """Give back a run a draining worker will not finish: the attempt is ``lost`` and its
        retry (an ordinary next attempt, or the dead letters) is due at once."""
        now = self._clock.now()
        async with self._uow_factory() as uow:
            run = await _held_run(uow, run_id)
            read_version = run.version
            actor = f"worker:{run.worker_id}"
            _fenced(lambda: run.check_token(token))
            event = replace(_fenced(lambda: run.lose(now=now, reason=reason)), actor=actor)
            await uow.events.add(event)
            retry = await self._settle(uow, run, now=now, actor=actor, delay=timedelta(0))
            await uow.runs.update(run, expected_version=read_version)
            await uow.commit()
        return Settlement(run, retry)

    async def _settle(
        self,
        uow: UnitOfWork,
        run: TaskRun,
        *,
        now: datetime,
        actor: str,
        delay: timedelta | None = None,
    ) -> TaskRun | None:
        if not run.failed_attempt:
            return None
        task: Task | None = await uow.tasks.get(run.task_id)
        return await settle_failed_attempt(
            uow, run, task=task, now=now, actor=actor, rng=self._rng, delay=delay
        )


async def _held_run(uow: UnitOfWork, run_id: str) -> TaskRun:
    run = await uow.runs.get(run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found", field="run_id")
    return run


def _fenced(action: Callable[[], T]) -> T:
    """Run a transition; a stale token or a run that moved on is the caller's Conflict."""
    try:
        return action()
    except StaleFencingToken as error:
        raise Conflict(error.message, field="token") from None
    except (IllegalTransition, LeaseLost) as error:
        raise Conflict(error.message, field="status") from None


def _claim_event(run: TaskRun, worker_id: str) -> RunEvent:
    """The queued → running record ``RunRepository.claim`` made true (the domain's claim event)."""
    return RunEvent(
        run_id=run.id,
        task_id=run.task_id,
        from_status=RunStatus.QUEUED,
        to_status=RunStatus.RUNNING,
        at=run.started_at or run.created_at,
        actor=f"worker:{worker_id}",
        detail={"worker_id": worker_id},
    )
