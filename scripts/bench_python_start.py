"""Trigger-to-start latency of a ``python`` task: from the trigger call to the first line of the
task's own function, one run at a time.

The task's callable is ``time:time``: it returns the instant it started, so the latency is that
value minus the instant the trigger was called (the whole path: trigger, relay, memory queue,
claim, then the executor — today a sandboxed interpreter from the pool, before #12 a thread of
the worker process). In-process stack on SQLite (the embedded default's shape), one worker.
Works against this tree and against trees from before the executor policy and the sandbox
existed (it only passes what their constructors accept), so the two can be compared in one
sitting: run it from each checkout's own environment.

Usage:  uv run python scripts/bench_python_start.py [--runs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.execution.service import ExecutionService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
from scheduler_domain.accounts import Role, User
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.outbound.guarded import public_only
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.memory import MemoryRunQueue
from scheduler_worker.executors import ExecutorRegistry, builtin_executors
from scheduler_worker.runtime import WorkerOptions, WorkerRuntime

OWNER = Principal(subject_id="bench-operator", role=Role.OPERATOR)


def _accepted(cls: Any, **kwargs: Any) -> Any:
    """``cls(**kwargs)`` with only the keywords its constructor takes (older trees lack some)."""
    names = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in kwargs.items() if k in names})


def _policy() -> Any:
    try:
        from scheduler_domain.executor_policy import ExecutorPolicy
    except ImportError:  # before the executor policy
        return None
    return ExecutorPolicy(python_allow=("time:time",))


async def _round(runs_count: int) -> list[float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-python-"))
    url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=5)
    uow_factory = SqlUnitOfWorkFactory(engine)
    clock = SystemClock()
    policy = _policy()
    async with uow_factory() as uow:
        now = clock.now()
        await uow.users.add(
            User(
                id=OWNER.subject_id,
                username="bench-operator",
                password_hash="!",  # noqa: S106 (no password: it cannot log in)
                role=OWNER.role,
                created_at=now,
                updated_at=now,
            )
        )
        await uow.commit()
    tasks = _accepted(TaskService, uow_factory=uow_factory, clock=clock, executor_policy=policy)
    latencies: list[float] = []
    async with MemoryRunQueue() as queue:
        relay = RunRelay(uow_factory=uow_factory, clock=clock, queue=queue)
        runs = RunService(uow_factory=uow_factory, clock=clock, relay=relay)
        execution = _accepted(
            ExecutionService,
            uow_factory=uow_factory,
            clock=clock,
            lease=timedelta(seconds=30),
            executor_policy=policy,
        )
        registry = ExecutorRegistry.discover(
            builtins=builtin_executors(http_transport=public_only()), entry_points=()
        )
        async with registry:
            runtime = WorkerRuntime(
                execution=execution,
                workers=WorkerService(uow_factory=uow_factory, clock=clock),
                queue=queue,
                executors=registry,
                options=WorkerOptions(capacity=4, heartbeat_interval=timedelta(seconds=5)),
            )
            working = asyncio.create_task(runtime.run())
            await asyncio.wait_for(runtime.wait_started(), timeout=30)
            task = await tasks.create(
                {"name": "now", "executor": "python", "params": {"callable": "time:time"}},
                principal=OWNER,
            )
            for n in range(runs_count + 20):  # the first 20 warm the pool and the caches
                called = time.time()
                run = await runs.trigger(task.id, principal=OWNER)
                # Polling the run is what a client does; 1 ms adds at most 1 ms to a figure.
                while not (run := await runs.get(run.id, principal=OWNER)).status.is_final:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)
                if run.result is None or "return_value" not in run.result:
                    raise SystemExit(f"run {run.id} ended {run.status}: {run.error}")
                if n >= 20:
                    latencies.append((run.result["return_value"] - called) * 1000)
            runtime.stop()
            await asyncio.wait_for(working, timeout=60)
    await engine.dispose()
    return latencies


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}  python {sys.version.split()[0]}  uid {os.geteuid()}")
    p50s, p99s = [], []
    for round_number in range(1, args.rounds + 1):
        latencies = await _round(args.runs)
        p50, p99 = statistics.median(latencies), _percentile(latencies, 0.99)
        p50s.append(p50)
        p99s.append(p99)
        print(f"round {round_number}: trigger -> function start p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    print(
        f"median of {args.rounds}: p50 {statistics.median(p50s):.2f} ms  "
        f"p99 {statistics.median(p99s):.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
