"""End-to-end throughput and trigger-to-start latency, per queue backend.

For each backend this starts real processes — one ``scheduler-dispatcher`` and
``--workers`` ``scheduler-worker`` processes — on a fresh PostgreSQL database, then:

1. throughput: once every process is up, inserts N pending no-op runs in one transaction, lets
   the dispatcher relay them and the workers claim, execute and record them, and reports runs/s
   from the first ``queued_at`` to the last ``finished_at`` (database + queue + claim + outcome,
   the whole path);
2. latency at light load: triggers runs one at a time the way the API does (the run is gated,
   queued and committed in one transaction, then published) and reports p50/p99 of
   ``started_at - created_at``.

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
from typing import Any

import asyncpg
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.engine import make_url

from scheduler_application.accounts.access import Principal
from scheduler_application.dispatch.relay import RunRelay
from scheduler_application.runs.service import RunService
from scheduler_application.tasks.service import TaskService
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
ADMIN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
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


def _env(
    url: str, backend: str, prefix: str, capacity: int, relay_interval: float = 0.05
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(
        SCHEDULER_CONFIG=str(ROOT / "config" / "default.toml"),
        SCHEDULER__DATABASE__URL=url,
        SCHEDULER__QUEUE__BACKEND=backend,
        SCHEDULER__QUEUE__PREFIX=prefix,
        SCHEDULER__WORKER__CAPACITY=str(capacity),
        SCHEDULER__LOGGING__LEVEL="WARNING",
        SCHEDULER__LOGGING__FORMAT="json",
        SCHEDULER__DISPATCHER__RELAY_INTERVAL_SECONDS=str(relay_interval),
        SCHEDULER__RABBITMQ__URL=RABBITMQ_URL.replace("guest:guest@", "guest@"),
        SCHEDULER__RABBITMQ__PASSWORD="guest",  # noqa: S106 - the local broker's default
        SCHEDULER__REDIS__URL=REDIS_URL if backend == "redis" else "",
        # No /metrics listeners: several workers share this machine (the metrics themselves
        # are still recorded, as in production).
        SCHEDULER__WORKER__METRICS_PORT="0",
        SCHEDULER__DISPATCHER__METRICS_PORT="0",
    )
    return env


_ENTRY_POINTS = {
    "scheduler-worker": "scheduler_worker.main",
    "scheduler-dispatcher": "scheduler_dispatcher.main",
}


def _start(
    binary: str, env: dict[str, str], log: Path, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start one of our console scripts; with ``profile``, under cProfile (stats written to
    that file when the process exits after SIGTERM)."""
    command = [str(BIN / binary)]
    if profile is not None:
        module = _ENTRY_POINTS[binary]
        command = [
            sys.executable,
            "-c",
            f"import cProfile, sys; from {module} import main; cProfile.run('main()', sys.argv[1])",
            str(profile),
        ]
    with log.open("ab") as handle:
        return subprocess.Popen(  # noqa: S603 - our own console scripts
            command, env=env, stdout=handle, stderr=subprocess.STDOUT
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
            await connection.execute(select(func.count()).where(task_runs.c.status == "succeeded"))
        ).scalar_one()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux ``/proc``); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine (all cores), from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _database_pids(engine) -> list[int]:  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return [row[0] for row in rows]


async def _database_counters(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Commits and row writes in the bench database (the statistics lag up to ~1 s)."""
    async with engine.connect() as connection:
        commits = (
            await connection.execute(
                text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            )
        ).scalar_one()
        rows = (
            await connection.execute(
                text(
                    "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0),"
                    " coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables"
                )
            )
        ).one()
    return {
        "commits": int(commits),
        "inserts": int(rows[0]),
        "updates": int(rows[1]),
        "deletes": int(rows[2]),
    }


class _CpuMeter:
    """CPU seconds per process group (workers, dispatcher, PostgreSQL backends of the bench
    database, this script) and for the whole machine, between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self._groups: dict[str, list[int]] = {}
        self._before: dict[int, float] = {}
        self._machine = 0.0
        self.result: dict[str, float] = {}

    def track(self, group: str, pids: list[int]) -> None:
        """Count these processes (from ``start()``, or from now for ones seen later)."""
        for pid in pids:
            if pid not in self._before:
                self._groups.setdefault(group, []).append(pid)
                self._before[pid] = _cpu_seconds(pid)

    def start(self) -> None:
        for pid in self._before:
            self._before[pid] = _cpu_seconds(pid)
        self._machine = _machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        for group, pids in self._groups.items():
            self.result[group] = sum(
                max(_cpu_seconds(pid) - self._before[pid], 0.0) for pid in pids
            )
        self.result["machine"] = _machine_busy_seconds() - self._machine
        return self.result


async def bench_backend(
    backend: str,
    runs: int,
    workers: int,
    capacity: int,
    light: int,
    profile: Path | None = None,
    details: bool = False,
    relay_interval: float = 0.05,
) -> dict[str, Any]:
    name = f"scheduler_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN).set(drivername="postgresql+asyncpg", database=name)
    url_text = url.render_as_string(hide_password=False)
    processes: list[subprocess.Popen[bytes]] = []
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    engine = create_engine(url_text, pool_size=5)
    meter = _CpuMeter()
    try:
        await asyncio.to_thread(upgrade, url_text)
        uow = SqlUnitOfWorkFactory(engine)
        clock = SystemClock()
        task = await TaskService(uow_factory=uow, clock=clock).create(
            {"name": "bench-noop", "executor": "noop"}, principal=OWNER
        )
        prefix = f"bench{secrets.token_hex(3)}"
        env = _env(url_text, backend, prefix, capacity, relay_interval)
        for i in range(workers):
            processes.append(
                _start(
                    "scheduler-worker",
                    env | {"SCHEDULER__WORKER__NAME": f"w{i}"},
                    logs / f"w{i}.log",
                    None if profile is None else profile / f"{backend}-w{i}.prof",
                )
            )
        processes.append(
            _start(
                "scheduler-dispatcher",
                env,
                logs / "dispatcher.log",
                None if profile is None else profile / f"{backend}-dispatcher.prof",
            )
        )
        await asyncio.sleep(3)  # workers register and start consuming, the dispatcher starts
        meter.track("workers", [p.pid for p in processes[:-1]])
        meter.track("dispatcher", [processes[-1].pid])
        meter.track("bench", [os.getpid()])
        meter.track("postgres", await _database_pids(engine))
        counters_before = await _database_counters(engine)
        # One transaction: the dispatcher's relay sees all of them at once, at its commit.
        await _insert_pending(engine, task.id, runs)
        meter.start()
        started = time.perf_counter()
        while await _count_succeeded(engine) < runs:
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"{backend}: not finished after 600 s; logs in {logs}")
            # Pools grow under load: keep picking up new server processes.
            meter.track("postgres", await _database_pids(engine))
            await asyncio.sleep(0.2)
        cpu = meter.stop()
        async with engine.connect() as connection:
            first, last = (
                await connection.execute(
                    select(func.min(task_runs.c.queued_at), func.max(task_runs.c.finished_at))
                )
            ).one()
        elapsed = (last - first).total_seconds()
        # Idle server processes report their statistics up to 10 s late (PostgreSQL 15).
        await asyncio.sleep(11.0 if details else 0.0)
        counters_after = await _database_counters(engine)
        counters_after["inserts"] -= runs  # the bench's own pending runs
        per_run = {
            key: (counters_after[key] - counters_before[key]) / runs for key in counters_before
        }

        # Light load: one run at a time, triggered as the API does it (the run passes the
        # relay's gates in its own transaction and is published at once). Both ends are
        # stamped by the system under test; the harness reads the start stamp once the run
        # has had time to start (then every 2 ms until it has), with one light autocommit
        # query on a connection held open, so that it takes no CPU from the path it measures.
        latencies: list[float] = []
        phases: list[tuple[float, float]] = []
        started_at = select(task_runs.c.started_at).where(task_runs.c.id == bindparam("id"))
        # Publishing only: no LISTEN connection of our own to wake on every publish.
        only_publish = {"listen": False} if backend == "postgres" else {}
        async with (
            build_run_queue(
                backend=backend,
                engine=engine,
                rabbitmq_url=RABBITMQ_URL,
                redis_url=REDIS_URL,
                prefix=prefix,
                **only_publish,
            ) as queue,
            engine.connect() as poller,
        ):
            await poller.execution_options(isolation_level="AUTOCOMMIT")
            relay = RunRelay(uow_factory=uow, clock=clock, queue=queue)
            service = RunService(uow_factory=uow, clock=clock, relay=relay)
            for _ in range(light):
                run = await service.trigger(task.id, principal=OWNER)
                published = clock.now()
                await asyncio.sleep(0.015)
                while True:
                    start = (await poller.execute(started_at, {"id": run.id})).scalar_one()
                    if start is not None:
                        break
                    await asyncio.sleep(0.002)
                latencies.append((start - run.created_at).total_seconds() * 1000)
                phases.append(
                    (
                        (published - run.created_at).total_seconds() * 1000,
                        (start - published).total_seconds() * 1000,
                    )
                )
                await asyncio.sleep(0.005)
        latencies.sort()
        return {
            "backend": backend,
            "runs": runs,
            "seconds": elapsed,
            "runs_per_second": runs / elapsed,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "cpu_ms_per_run": {k: v * 1000 / runs for k, v in cpu.items()},
            # p50 of the latency's parts: trigger (create, gate and commit the run, and publish
            # it), deliver (from the trigger returning to the claim's start stamp).
            "latency_parts_p50_ms": {
                name: statistics.median(part[i] for part in phases)
                for i, name in enumerate(("trigger", "deliver"))
            },
            "db_per_run": per_run,
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(60 if profile else 30)
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
    parser.add_argument("--repeat", type=int, default=1, help="rounds per backend (medians)")
    parser.add_argument(
        "--relay-interval",
        type=float,
        default=0.05,
        help="the dispatcher's relay (and dependency) loop interval, seconds",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run dispatcher and workers under cProfile, writing <backend>-<process>.prof here",
    )
    parser.add_argument(
        "--details",
        action="store_true",
        help="also print CPU ms per run by process group and commits/row writes per run",
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(f"{'backend':10} {'runs':>7} {'seconds':>8} {'runs/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for backend in args.backends.split(","):
        rounds = []
        for _ in range(args.repeat):
            r = await bench_backend(
                backend,
                args.runs,
                args.workers,
                args.capacity,
                args.light,
                args.profile,
                details=args.details,
                relay_interval=args.relay_interval,
            )
            rounds.append(r)
            _print_row(r)
            if args.details:
                cpu = " ".join(f"{k}={v:.2f}" for k, v in r["cpu_ms_per_run"].items())
                db = " ".join(f"{k}={v:.2f}" for k, v in r["db_per_run"].items())
                parts = " ".join(f"{k}={v:.1f}" for k, v in r["latency_parts_p50_ms"].items())
                print(
                    f"{'':10} cpu ms/run: {cpu}\n{'':10} db per run: {db}\n"
                    f"{'':10} latency p50 parts ms: {parts}",
                    flush=True,
                )
        if len(rounds) > 1:
            _print_row(
                {
                    "backend": f"{backend}~",
                    "runs": args.runs,
                    "seconds": statistics.median(r["seconds"] for r in rounds),
                    "runs_per_second": statistics.median(r["runs_per_second"] for r in rounds),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
                }
            )


def _print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['backend']:10} {r['runs']:>7} {r['seconds']:>8.2f} {r['runs_per_second']:>8.0f} "
        f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
