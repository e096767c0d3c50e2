"""A worker runtime for in-process tests, wired by the worker's own composition function
(:func:`scheduler_worker.bootstrap.worker_runtime`) on parts the test chooses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.redaction import NO_SECRET_SCOPE, SecretScope
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_application.testing import OPEN_EXECUTOR_POLICY
from scheduler_infrastructure.outbound.guarded import public_only
from scheduler_worker.bootstrap import worker_runtime
from scheduler_worker.executors import ExecutorRegistry, builtin_executors
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime


def builtin_registry(*, kill_grace_seconds: float = 5.0) -> ExecutorRegistry:
    """The built-in executors (HTTP to public addresses only), no plugins."""
    return ExecutorRegistry.discover(
        builtins=builtin_executors(
            http_transport=public_only(), kill_grace_seconds=kill_grace_seconds
        ),
        entry_points=(),
    )


def in_process_worker(
    *,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    queue: RunQueue,
    options: WorkerOptions,
    executors: ExecutorRegistry | None = None,
    secret_box: SecretBox | None = None,
    secret_scope: SecretScope = NO_SECRET_SCOPE,
) -> WorkerRuntime:
    """A worker runtime on the test's database and queue, every executor allowed;
    ``executors`` defaults to the built-ins with a shell task killed 1 s after its timeout."""
    return worker_runtime(
        uow_factory=uow_factory,
        clock=clock,
        queue=queue,
        executors=builtin_registry(kill_grace_seconds=1.0) if executors is None else executors,
        options=options,
        executor_policy=OPEN_EXECUTOR_POLICY,
        secret_box=secret_box,
        secret_scope=secret_scope,
    )


@contextlib.asynccontextmanager
async def running(runtime: WorkerRuntime) -> AsyncIterator[WorkerRuntime]:
    """``runtime`` running until the block ends (then stopped and awaited)."""
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.wait_started(), timeout=10)
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, timeout=30)
