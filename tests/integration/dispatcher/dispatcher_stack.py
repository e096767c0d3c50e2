"""An in-process stack for dispatcher tests: a real database (SQLite and PostgreSQL), the memory
queue, the real worker runtime, and every dispatcher loop (scheduler, dependencies, relay with
routing and rate limits, reaper, worker liveness)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from in_process_worker import in_process_worker, running
from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService
from scheduler_application.ports.queue import RunQueue
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.changes import TaskChangeSignal
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_dispatcher.bootstrap import dispatcher_loops
from scheduler_dispatcher.loop_group import LoopGroup
from scheduler_dispatcher.loops import LoopTimings, PeriodicLoop
from scheduler_dispatcher.scheduler_loop import SchedulerLoop
from scheduler_domain.accounts import Role
from scheduler_domain.run import TaskRun
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_infrastructure.ratelimit import LocalRateLimiter
from scheduler_infrastructure.resources import compose_relay
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime

OWNER = Principal(subject_id="user-1", role=Role.USER)
REDIS_URL = os.environ.get("SCHEDULER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: A port nothing listens on: a Redis that is down.
DEAD_REDIS_URL = "redis://127.0.0.1:6390/0"


@dataclass
class DispatcherStack:
    uow_factory: SqlUnitOfWorkFactory
    queue: RunQueue
    tasks: TaskService
    runs: RunService
    execution: ExecutionService
    dispatcher: LoopGroup
    scheduler: SchedulerLoop
    relay: RunRelay
    signal: TaskChangeSignal
    clock: SystemClock

    async def create_task(self, name: str, **spec: Any) -> str:
        task = await self.tasks.create({"name": name, **spec}, principal=OWNER)
        return task.id

    async def runs_of(self, task_id: str) -> list[TaskRun]:
        page = await self.runs.list(principal=OWNER, task_id=task_id, limit=200)
        return sorted(page.items, key=lambda r: (r.scheduled_for, r.attempt))

    async def wait_for(
        self, predicate: Callable[[], Awaitable[bool]], *, within: float = 20.0
    ) -> None:
        async with asyncio.timeout(within):
            while not await predicate():
                await asyncio.sleep(0.05)

    def worker(self, **options: Any) -> WorkerRuntime:
        settings: dict[str, Any] = {
            "capacity": 4,
            "heartbeat_interval": timedelta(seconds=0.2),
            "lease": timedelta(seconds=5),
            "drain_timeout": timedelta(seconds=5),
            "executor_grace_seconds": 2.0,
        }
        settings.update(options)
        return in_process_worker(
            uow_factory=self.uow_factory,
            clock=self.clock,
            queue=self.queue,
            options=WorkerOptions(**settings),
        )


#: The worker runs until the block ends.
running_worker = running


@contextlib.asynccontextmanager
async def dispatcher_stack(
    uow_factory: SqlUnitOfWorkFactory,
    *,
    max_sleep: timedelta = timedelta(seconds=0.2),
    fire_ahead: timedelta = timedelta(0),
    extra_loops: Callable[[SchedulerLoop], list[PeriodicLoop]] | None = None,
    queue: RunQueue | None = None,
) -> AsyncIterator[DispatcherStack]:
    """``queue``: an open adapter of another backend (default: a memory queue of its own)."""
    clock = SystemClock()
    signal = TaskChangeSignal()
    timings = LoopTimings(
        relay_interval=timedelta(seconds=0.05),
        reaper_interval=timedelta(seconds=0.2),
        requeue_after=timedelta(seconds=30),
        worker_silence=timedelta(seconds=30),
        batch_size=100,
    )
    async with contextlib.AsyncExitStack() as opened:
        if queue is None:
            queue = await opened.enter_async_context(MemoryRunQueue())
        relay = compose_relay(
            uow_factory=uow_factory,
            clock=clock,
            queue=queue,
            worker_silence=timings.worker_silence,
            rate_limiter=LocalRateLimiter(),
        )
        scheduler, loops = dispatcher_loops(
            uow_factory=uow_factory,
            clock=clock,
            relay=relay,
            timings=timings,
            max_sleep=max_sleep,
            fire_ahead=fire_ahead,
        )
        signal.subscribe(scheduler.wake)
        if extra_loops is not None:
            loops.extend(extra_loops(scheduler))
        dispatcher = LoopGroup(loops=loops)
        task = asyncio.create_task(dispatcher.run())
        await asyncio.wait_for(dispatcher.wait_started(), timeout=5)
        try:
            yield DispatcherStack(
                uow_factory=uow_factory,
                queue=queue,
                tasks=TaskService(
                    uow_factory=signal.watch(uow_factory),
                    clock=clock,
                    executor_policy=OPEN_EXECUTOR_POLICY,
                ),
                runs=RunService(uow_factory=uow_factory, clock=clock, relay=relay),
                execution=ExecutionService(
                    uow_factory=uow_factory,
                    clock=clock,
                    lease=timedelta(seconds=5),
                    executor_policy=OPEN_EXECUTOR_POLICY,
                ),
                dispatcher=dispatcher,
                scheduler=scheduler,
                relay=relay,
                signal=signal,
                clock=clock,
            )
        finally:
            dispatcher.stop()
            await asyncio.wait_for(task, timeout=10)
