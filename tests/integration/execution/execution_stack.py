"""An in-process stack for execution tests: real database (SQLite and Postgres), the memory
queue, the real worker runtime and the dispatcher's reliability loops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from in_process_worker import in_process_worker
from in_process_worker import running as running  # the tests here import it from this module
from scheduler_application.accounts.access import Principal
from scheduler_application.execution.service import ExecutionService
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_dispatcher.bootstrap import reliability
from scheduler_dispatcher.loop_group import LoopGroup
from scheduler_dispatcher.loops import LoopTimings
from scheduler_domain.accounts import Role
from scheduler_domain.run import TaskRun
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_infrastructure.ratelimit import LocalRateLimiter
from scheduler_infrastructure.resources import compose_relay
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime
from scheduler_worker.sandbox.policy import sandbox_policy

OWNER = Principal(subject_id="user-1", role=Role.USER)
#: An interpreter shell tasks can run: when the tests run as root, tasks run as nobody, who
#: may not reach the worker's own interpreter.
PYTHON = sandbox_policy().python_executable


@dataclass
class Stack:
    uow_factory: SqlUnitOfWorkFactory
    queue: MemoryRunQueue
    tasks: TaskService
    runs: RunService
    execution: ExecutionService
    dispatcher: LoopGroup
    clock: SystemClock

    async def create_task(self, **spec: Any) -> str:
        spec.setdefault("name", f"task-{len(spec)}-{id(spec)}")
        task = await self.tasks.create(spec, principal=OWNER)
        return task.id

    async def trigger(self, task_id: str, key: str | None = None) -> TaskRun:
        run = await self.runs.trigger(task_id, principal=OWNER, idempotency_key=key)
        self.dispatcher.loop("relay").wake()
        return run

    async def wait_for(
        self, predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20.0
    ) -> None:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)

    async def runs_of(self, task_id: str) -> list[TaskRun]:
        page = await self.runs.list(principal=OWNER, task_id=task_id, limit=100)
        return sorted(page.items, key=lambda r: r.attempt)

    def worker(self, **options: Any) -> WorkerRuntime:
        defaults: dict[str, Any] = {
            "capacity": 4,
            "heartbeat_interval": timedelta(seconds=0.2),
            "lease": timedelta(seconds=2),
            "drain_timeout": timedelta(seconds=5),
            "executor_grace_seconds": 2.0,
        }
        defaults.update(options)
        return in_process_worker(
            uow_factory=self.uow_factory,
            clock=self.clock,
            queue=self.queue,
            options=WorkerOptions(**defaults),
        )


@pytest.fixture
async def stack(uow_factory: SqlUnitOfWorkFactory) -> AsyncIterator[Stack]:
    clock = SystemClock()
    async with MemoryRunQueue() as queue:
        timings = LoopTimings(
            relay_interval=timedelta(seconds=0.05),
            reaper_interval=timedelta(seconds=0.2),
            requeue_after=timedelta(seconds=30),
            worker_silence=timedelta(seconds=30),
        )
        relay = compose_relay(
            uow_factory=uow_factory,
            clock=clock,
            queue=queue,
            worker_silence=timings.worker_silence,
            rate_limiter=LocalRateLimiter(),
        )
        execution = ExecutionService(
            uow_factory=uow_factory,
            clock=clock,
            lease=timedelta(seconds=2),
            executor_policy=OPEN_EXECUTOR_POLICY,
        )
        dispatcher = LoopGroup(
            loops=reliability(uow_factory=uow_factory, clock=clock, relay=relay, timings=timings)
        )
        task = asyncio.create_task(dispatcher.run())
        try:
            yield Stack(
                uow_factory=uow_factory,
                queue=queue,
                tasks=TaskService(
                    uow_factory=uow_factory, clock=clock, executor_policy=OPEN_EXECUTOR_POLICY
                ),
                runs=RunService(uow_factory=uow_factory, clock=clock, relay=relay),
                execution=execution,
                dispatcher=dispatcher,
                clock=clock,
            )
        finally:
            dispatcher.stop()
            await asyncio.wait_for(task, timeout=10)
