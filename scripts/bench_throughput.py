"""End-to-end throughput and trigger-to-start latency, per queue backend.

For each backend this starts real processes — one ``scheduler-dispatcher`` and
``--workers`` ``scheduler-worker`` processes — on a fresh PostgreSQL database, then:

1. throughput: inserts N pending no-op runs, lets the dispatcher relay them and the workers
   claim, execute and record them, and reports runs/s from the first ``queued_at`` to the last
   ``finished_at`` (database + queue + claim + outcome, the whole path);
2. latency at light load: triggers runs one at a time the way the API does (create the pending
   run, commit, publish at once) and reports p50/p99 of ``started_at - created_at``.

Usage:  uv run python scripts/bench_throughput.py [--runs 5000] [--backends postgres,rabbitmq,redis]
Needs PostgreSQL (and RabbitMQ/Redis for those backends) on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from scheduler_application.auth_context import Principal
from scheduler_application.relay import RunRelay
from scheduler_application.runs import RunService
from scheduler_application.tasks import TaskService
from scheduler_domain.accounts import Role
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_infrastructure.clock import SystemClock
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.mappers import run_to_row
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.tables import task_runs
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory
from scheduler_infrastructure.queues.factory import build_run_queue

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN = os.environ.get("SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
OWNER = Principal(subject_id="bench", role=Role.USER)


async def _admin(statement: str) -> None:
    dsn = make_url(ADMIN).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _env(url: str, backend: str, prefix: str, capacity: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(
        SCHEDULER_CONFIG=str(ROOT / "config" / "default.toml"),
        SCHEDULER__DATABASE__URL=url,
        SCHEDULER__QUEUE__BACKEND=backend,
        SCHEDULER__QUEUE__PREFIX=prefix,
        SCHEDULER__WORKER__CAPACITY=str(capacity),
        SCHEDULER__LOGGING__LEVEL="WARNING",
        SCHEDULER__LOGGING__FORMAT="json",
        SCHEDULER__DISPATCHER__RELAY_INTERVAL_SECONDS="0.05",
        SCHEDULER__RABBITMQ__URL=RABBITMQ_URL.replace("guest:guest@", "guest@"),
        SCHEDULER__RABBITMQ__PASSWORD="guest",
        SCHEDULER__REDIS__URL=REDIS_URL if backend == "redis" else "",
    )
    return env


def _start(binary: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(  # noqa: S603 - our own console scripts
            [str(BIN / binary)], env=env, stdout=handle, stderr=subprocess.STDOUT
        )


async def _insert_pending(engine, task_id: str, count: int) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        run = TaskRun(
            task_id=task_id,
            owner_id=OWNER.subject_id,
            trigger=RunTrigger.MANUAL,
            scheduled_for=now + timedelta(microseconds=i),
            created_at=now,
        )
        rows.append(run_to_row(run))
    async with engine.begin() as connection:
        for start in range(0, len(rows), 1000):
            await connection.execute(insert(task_runs), rows[start : start + 1000])


async def _count_succeeded(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return (
            await connection.execute(
                select(func.count()).where(task_runs.c.status == "succeeded")
            )
        ).scalar_one()


async def bench_backend(backend: str, runs: int, workers: int, capacity: int, light: int) -> dict:
    name = f"scheduler_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN).set(drivername="postgresql+asyncpg", database=name)
    url_text = url.render_as_string(hide_password=False)
    processes: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    engine = create_engine(url_text, pool_size=5)
    try:
        await asyncio.to_thread(upgrade, url_text)
        uow = SqlUnitOfWorkFactory(engine)
        clock = SystemClock()
        task = await TaskService(uow_factory=uow, clock=clock).create(
            {"name": "bench-noop", "executor": "noop"}, principal=OWNER
        )
        prefix = f"bench{secrets.token_hex(3)}"
        env = _env(url_text, backend, prefix, capacity)
        for i in range(workers):
            processes.append(_start("scheduler-worker", env | {"SCHEDULER__WORKER__NAME": f"w{i}"}, logs / f"w{i}.log"))
        await asyncio.sleep(3)  # workers register and start consuming
        await _insert_pending(engine, task.id, runs)
        started = time.perf_counter()
        processes.append(_start("scheduler-dispatcher", env, logs / "dispatcher.log"))
        while await _count_succeeded(engine) < runs:
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"{backend}: not finished after 600 s; logs in {logs}")
            await asyncio.sleep(0.2)
        async with engine.connect() as connection:
            first, last = (
                await connection.execute(
                    select(func.min(task_runs.c.queued_at), func.max(task_runs.c.finished_at))
                )
            ).one()
        elapsed = (last - first).total_seconds()

        # Light load: one run at a time, published at once as the API does.
        service = RunService(uow_factory=uow, clock=clock)
        latencies: list[float] = []
        async with build_run_queue(
            backend=backend, engine=engine, rabbitmq_url=RABBITMQ_URL, redis_url=REDIS_URL,
            prefix=prefix,
        ) as queue:
            relay = RunRelay(uow_factory=uow, clock=clock, queue=queue)
            for _ in range(light):
                run = await service.trigger(task.id, principal=OWNER)
                await relay.relay_pending(10)
                while True:
                    current = await service.get(run.id, principal=OWNER)
                    if current.started_at is not None:
                        break
                    await asyncio.sleep(0.001)
                latencies.append((current.started_at - current.created_at).total_seconds() * 1000)
                await asyncio.sleep(0.02)
        latencies.sort()
        return {
            "backend": backend,
            "runs": runs,
            "seconds": elapsed,
            "runs_per_second": runs / elapsed,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=64)
    parser.add_argument("--light", type=int, default=200, help="runs for the latency test")
    parser.add_argument("--backends", default="postgres,rabbitmq,redis")
    args = parser.parse_args()
    print(f"{'backend':10} {'runs':>7} {'seconds':>8} {'runs/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for backend in args.backends.split(","):
        r = await bench_backend(backend, args.runs, args.workers, args.capacity, args.light)
        print(
            f"{r['backend']:10} {r['runs']:>7} {r['seconds']:>8.2f} {r['runs_per_second']:>8.0f} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
