"""The worker's composition root: the only module of the worker that knows the adapters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.limits.circuits import CircuitBreakers
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.queue import RunQueue
from scheduler_application.ports.redaction import (
    NO_REDACTION,
    NO_SECRET_SCOPE,
    Redactor,
    SecretScope,
)
from scheduler_application.ports.secrets import SecretBox
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import (
    StatementUnitOfWorkFactory,
    UnitOfWorkFactory,
)
from scheduler_domain.executor_policy import ExecutorPolicy
from scheduler_domain.outbound import OutboundPolicy
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.event_loop import run as run_event_loop
from scheduler_infrastructure.outbound.guarded import GuardedTransport
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.resources import Resources, open_resources
from scheduler_infrastructure.startup import StartupError, prepare
from scheduler_infrastructure.telemetry import component_metrics
from scheduler_infrastructure.waiting import StartupInterrupted
from scheduler_worker.executors import ExecutorRegistry, builtin_executors
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime
from scheduler_worker.sandbox.dumpable import make_non_dumpable
from scheduler_worker.sandbox.errors import SandboxConfigError
from scheduler_worker.sandbox.policy import ResourceLimits, SandboxPolicy, sandbox_policy

__all__ = [
    "StartupError",
    "StartupInterrupted",
    "build_worker",
    "prepare",
    "run_event_loop",
    "standalone_worker",
    "worker_executors",
    "worker_options",
    "worker_runtime",
    "worker_sandbox",
]


def worker_options(settings: Settings) -> WorkerOptions:
    w = settings.worker
    return WorkerOptions(
        name=w.name,
        queues=w.queues,
        labels=frozenset(w.labels),
        capacity=w.capacity,
        heartbeat_interval=timedelta(seconds=w.heartbeat_seconds),
        lease=timedelta(seconds=w.lease_seconds),
        drain_timeout=timedelta(seconds=w.drain_timeout_seconds),
        batch_window=timedelta(milliseconds=w.batch_window_ms),
    )


def worker_sandbox(settings: Settings) -> SandboxPolicy:
    """Who ``shell`` and ``python`` tasks run as, their limits and network, from
    ``worker.*``."""
    w = settings.worker
    try:
        return sandbox_policy(
            run_as=w.run_as,
            allow_root_tasks=w.allow_root_tasks,
            isolate_tasks=w.isolate_tasks,
            task_uid_range=w.task_uid_range,
            task_uid_lock_dir=w.task_uid_lock_dir,
            task_home_dir=w.task_home_dir,
            task_network=w.task_network,
            limits=ResourceLimits(
                cpu_seconds=w.max_cpu_seconds,
                memory_bytes=w.max_memory_bytes,
                processes=w.max_processes,
                open_files=w.max_open_files,
            ),
            env_allowlist=w.env_allowlist,
            python_executable=w.python_executable,
        )
    except SandboxConfigError as error:
        raise StartupError(str(error)) from error


def worker_executors(settings: Settings) -> ExecutorRegistry:
    """The built-in executors as ``worker.*`` and ``executors.*`` configure them (sandbox,
    output cap, python pool, the HTTP executor's allow-list), plus the installed plugins."""
    w = settings.worker
    return ExecutorRegistry.discover(
        builtins=builtin_executors(
            sandbox=worker_sandbox(settings),
            output_limit=w.output_limit_bytes,
            python_pool_size=w.python_pool_size,
            python_max_runs_per_process=w.python_max_runs_per_process,
            http_transport=GuardedTransport(
                policy=OutboundPolicy.from_allow(
                    settings.executors.http.allow, field="executors.http.allow"
                )
            ),
        )
    )


def worker_runtime(
    *,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    queue: RunQueue,
    executors: ExecutorRegistry,
    options: WorkerOptions,
    observer: RunObserver = NO_OBSERVER,
    tracer: Tracer = NO_TRACER,
    redactor: Redactor = NO_REDACTION,
    executor_policy: ExecutorPolicy | None = None,
    secret_box: SecretBox | None = None,
    circuits: CircuitBreakers | None = None,
    secret_scope: SecretScope = NO_SECRET_SCOPE,
    statement_uow_factory: StatementUnitOfWorkFactory | None = None,
) -> WorkerRuntime:
    """A worker runtime on the parts given: its execution use cases (leases of
    ``options.lease``) and its registration (direct queues on ``queue``). What
    :func:`build_worker` runs, and what tests run on parts of their own; the caller opens and
    closes ``executors``."""
    return WorkerRuntime(
        execution=ExecutionService(
            uow_factory=uow_factory,
            clock=clock,
            lease=options.lease,
            observer=observer,
            redactor=redactor,
            executor_policy=executor_policy,
            secret_box=secret_box,
            circuits=circuits,
            statement_uow_factory=statement_uow_factory,
        ),
        workers=WorkerService(uow_factory=uow_factory, clock=clock, observer=observer, queue=queue),
        queue=queue,
        executors=executors,
        options=options,
        observer=observer,
        tracer=tracer,
        secret_scope=secret_scope,
    )


@contextlib.asynccontextmanager
async def build_worker(resources: Resources) -> AsyncIterator[WorkerRuntime]:
    """A worker runtime wired to ``resources``; its executors are closed on exit."""
    settings = resources.settings
    # Before any task process exists: tasks must not read this process's memory or environ.
    make_non_dumpable()
    async with worker_executors(settings) as registry:
        runtime = worker_runtime(
            uow_factory=resources.uow_factory,
            clock=resources.clock,
            queue=resources.queue,
            executors=registry,
            options=worker_options(settings),
            observer=resources.metrics,
            tracer=resources.tracer,
            redactor=resources.redactor,
            executor_policy=resources.executor_policy,
            secret_box=resources.secret_box,
            circuits=resources.circuits,
            secret_scope=resources.run_secrets,
            # A start is one statement with nothing read after it: no BEGIN or COMMIT round
            # trip on the way to a run (PostgreSQL).
            statement_uow_factory=SqlUnitOfWorkFactory(resources.engine).statement_units,
        )
        resources.metrics.watch_active_runs(lambda: runtime.active_runs)
        yield runtime


@contextlib.asynccontextmanager
async def standalone_worker(
    settings: Settings, *, stop: asyncio.Event | None = None
) -> AsyncIterator[WorkerRuntime]:
    """A worker with its own resources and, unless ``worker.metrics_port`` is 0, its own
    metrics endpoint. ``stop`` ends the waiting for the database or the queue at start-up."""
    async with (
        open_resources(settings, components=["worker"], stop=stop) as resources,
        component_metrics(
            resources.metrics, host=settings.worker.metrics_host, port=settings.worker.metrics_port
        ),
        build_worker(resources) as runtime,
    ):
        yield runtime
