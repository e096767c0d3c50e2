"""Soak: several dispatchers and workers, cron slots every second, dispatchers killed with kill -9.

On a fresh PostgreSQL database (created for the run and dropped after it), ``--tasks`` no-op
tasks fire on cron schedules — half every second, half every five seconds — while
``--dispatchers`` real ``scheduler-dispatcher`` processes and ``--workers`` real
``scheduler-worker`` processes run them (production defaults from ``config/default.toml``, the
queue ``--backend``). Every ``--kill-every`` seconds one dispatcher, in turn, is killed with
``kill -9`` and started again ``--down`` seconds later. After ``--duration`` seconds the
dispatchers stop, the workers finish what was fired, and every slot of the window (from a few
seconds after the start to a few seconds before the stop) is checked against the database:

- *missed*: a slot with neither a run nor a decision saying why it was skipped;
- *doubled*: a slot with more than one run, or a run that started more than once;
- *skipped*: slots with a recorded decision, by reason (none are expected: the default misfire
  policy keeps slots up to 60 s late);
- lateness, slot → *published* (claimable: the later of ``queued_at`` and ``not_before``) and
  slot → *started* on a worker, p50 / p99 / max.

Exits 1 if any slot was missed or doubled.

Usage:  uv run python scripts/soak_dispatchers.py [--tasks 200] [--duration 120]
        [--backend postgres|rabbitmq|redis] [--kill-every 15]
Needs PostgreSQL on 127.0.0.1 (``SCHEDULER_TEST_POSTGRES_URL`` to point elsewhere), and the
broker for ``--backend rabbitmq|redis``.
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
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dispatcher as bench

from scheduler_domain.schedules import parse_schedule
from scheduler_infrastructure.persistence.migrations import upgrade

#: Cron expressions (seconds first) and their period, half of the tasks each.
SCHEDULES = (("* * * * * *", 1), ("*/5 * * * * *", 5))
#: Seconds left out at each end of the window (start-up, shutdown).
MARGIN = 5


class Fleet:
    """The processes of the run, each restartable by name."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, binary: str, name: str, **extra: str) -> None:
        with (self._logs / f"{name}.log").open("ab") as handle:
            self.processes[name] = subprocess.Popen(  # noqa: S603 - our own console scripts
                [str(bench.BIN / binary)],
                env={**self._env, **extra},
                stdout=handle,
                stderr=handle,
            )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self, names: list[str]) -> None:
        for name in names:
            self.processes[name].send_signal(signal.SIGTERM)
        for name in names:
            try:
                self.processes[name].wait(30)
            except subprocess.TimeoutExpired:
                self.processes[name].kill()


def _env(database: str, backend: str, prefix: str) -> dict[str, str]:
    url = make_url(bench.ADMIN).set(drivername="postgresql+asyncpg", database=database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(
        SCHEDULER_CONFIG=str(bench.ROOT / "config" / "default.toml"),
        SCHEDULER__DATABASE__URL=url.render_as_string(hide_password=False),
        SCHEDULER__QUEUE__BACKEND=backend,
        SCHEDULER__QUEUE__PREFIX=prefix,
        SCHEDULER__RABBITMQ__URL=bench.RABBITMQ_URL.replace("guest:guest@", "guest@"),
        SCHEDULER__RABBITMQ__PASSWORD="guest",  # noqa: S106 - the local broker's default
        SCHEDULER__REDIS__URL=bench.REDIS_URL if backend == "redis" else "",
        SCHEDULER__LOGGING__LEVEL="WARNING",
        SCHEDULER__LOGGING__FORMAT="json",
        SCHEDULER__DISPATCHER__METRICS_PORT="0",
        SCHEDULER__WORKER__METRICS_PORT="0",
        SCHEDULER__WORKER__CAPACITY="64",
    )
    return env


def _slots(start: datetime, end: datetime, period: int) -> list[datetime]:
    """The slots in ``[start, end]`` of a cron every ``period`` seconds (from second 0)."""
    first = start.replace(microsecond=0)
    if first < start:
        first += timedelta(seconds=1)
    first += timedelta(seconds=(-first.second) % period)
    count = int((end - first).total_seconds()) // period + 1
    return [first + timedelta(seconds=period * i) for i in range(count)]


async def soak(args: argparse.Namespace) -> int:
    database = f"scheduler_soak_{secrets.token_hex(4)}"
    prefix = f"soak{secrets.token_hex(3)}"
    logs = Path(tempfile.mkdtemp(prefix="soak-dispatchers-"))
    await bench._admin(f'CREATE DATABASE "{database}"')
    fleet: Fleet | None = None
    try:
        url = make_url(bench.ADMIN).set(drivername="postgresql+asyncpg", database=database)
        await asyncio.to_thread(upgrade, url.render_as_string(hide_password=False))
        connection = await asyncpg.connect(bench._dsn(database))
        first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
        period_of: dict[str, int] = {}
        for cron, period in SCHEDULES:
            count = args.tasks // len(SCHEDULES)
            schedule = parse_schedule({"cron": cron})
            assert schedule is not None
            tag = f"every{period}s"
            next_run_at = schedule.next_after(first - timedelta(microseconds=1))
            assert next_run_at is not None
            await bench.insert_tasks(
                connection, count, schedule=schedule, next_run_at=next_run_at, tag=tag
            )
            rows = await connection.fetch("SELECT id FROM tasks WHERE id LIKE $1", f"{tag}-%")
            period_of.update({row["id"]: period for row in rows})
        fleet = Fleet(_env(database, args.backend, prefix), logs)
        dispatchers = [f"d{i + 1}" for i in range(args.dispatchers)]
        workers = [f"w{i + 1}" for i in range(args.workers)]
        for name in workers:
            fleet.start("scheduler-worker", name, SCHEDULER__WORKER__NAME=name)
        for name in dispatchers:
            fleet.start("scheduler-dispatcher", name)
        print(
            f"{len(period_of)} tasks, {args.dispatchers} dispatchers, {args.workers} workers,"
            f" {args.backend} queue; a kill -9 every {args.kill_every:.0f} s for"
            f" {args.duration:.0f} s (logs in {logs})",
            flush=True,
        )
        started = datetime.now(UTC)
        deadline = time.monotonic() + args.duration
        kills = 0
        while time.monotonic() + args.kill_every < deadline:
            await asyncio.sleep(args.kill_every)
            victim = dispatchers[kills % len(dispatchers)]
            fleet.kill(victim)
            kills += 1
            await asyncio.sleep(args.down)
            fleet.start("scheduler-dispatcher", victim)
        await asyncio.sleep(max(deadline - time.monotonic(), 0))
        stopped = datetime.now(UTC)
        fleet.stop(dispatchers)
        window = (
            max(started, first) + timedelta(seconds=MARGIN),
            stopped - timedelta(seconds=MARGIN),
        )
        await _drain(connection, window[1], timeout=60)
        fleet.stop(workers)
        ok = await _report(connection, period_of, window, kills)
        direct = [f"worker.{row['id']}" for row in await connection.fetch("SELECT id FROM workers")]
        await connection.close()
        await bench._clean_broker(prefix, queues=["default", *direct])
        return 0 if ok else 1
    finally:
        if fleet is not None:
            fleet.stop([n for n, p in fleet.processes.items() if p.poll() is None])
        await bench._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def _drain(connection: asyncpg.Connection, until: datetime, *, timeout: float) -> None:
    """Wait until every run for a slot up to ``until`` has finished (or ``timeout``)."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        open_runs = await connection.fetchval(
            "SELECT count(*) FROM task_runs WHERE scheduled_for <= $1"
            " AND status IN ('pending', 'queued', 'running')",
            until,
        )
        if open_runs == 0:
            return
        await asyncio.sleep(0.5)


async def _report(
    connection: asyncpg.Connection,
    period_of: dict[str, int],
    window: tuple[datetime, datetime],
    kills: int,
) -> bool:
    start, end = window
    runs = await connection.fetch(
        "SELECT r.id, r.task_id, r.scheduled_for, r.status, r.queued_at, r.not_before,"
        " r.started_at, (SELECT count(*) FROM run_events e WHERE e.run_id = r.id"
        " AND e.to_status = 'running') AS starts"
        " FROM task_runs r WHERE r.trigger = 'schedule' AND r.attempt = 1"
        " AND r.scheduled_for BETWEEN $1 AND $2",
        start,
        end,
    )
    skipped = await connection.fetch(
        "SELECT task_id, slot, reason FROM slot_decisions WHERE outcome = 'skipped'"
        " AND slot BETWEEN $1 AND $2",
        start,
        end,
    )
    fired = Counter((r["task_id"], r["scheduled_for"]) for r in runs)
    explained = {(d["task_id"], d["slot"]) for d in skipped}
    by_period = {period: _slots(start, end, period) for _, period in SCHEDULES}
    expected = {(task_id, slot) for task_id, p in period_of.items() for slot in by_period[p]}
    missed = sorted(expected - set(fired) - explained, key=lambda pair: pair[1])
    unexpected = len(set(fired) - expected)
    doubled = sum(1 for n in fired.values() if n > 1) + sum(1 for r in runs if r["starts"] > 1)
    unfinished = Counter(r["status"] for r in runs if r["status"] != "succeeded")
    published = [
        (max(r["queued_at"], r["not_before"] or r["queued_at"]) - r["scheduled_for"])
        / timedelta(milliseconds=1)
        for r in runs
        if r["queued_at"] is not None
    ]
    begun = [
        (r["started_at"] - r["scheduled_for"]) / timedelta(milliseconds=1)
        for r in runs
        if r["started_at"] is not None
    ]
    print(f"window {start:%H:%M:%S} to {end:%H:%M:%S} UTC, {kills} dispatchers killed with kill -9")
    print(
        f"  slots expected {len(expected)}, runs {len(runs)}, missed {len(missed)},"
        f" doubled {doubled}, runs for no slot of the schedule {unexpected}"
    )
    print(f"  skipped with a decision: {dict(Counter(d['reason'] for d in skipped)) or 'none'}")
    print(f"  runs not succeeded: {dict(unfinished) or 'none'}")
    for label, values in (("published", published), ("started", begun)):
        if values:
            print(
                f"  slot -> {label} ms: p50 {statistics.median(values):.0f},"
                f" p99 {bench._percentile(values, 0.99):.0f}, max {max(values):.0f}"
            )
    for task_id, slot in missed[:10]:
        print(f"  missed: {task_id} {slot:%H:%M:%S}")
    within = sum(1 for value in begun if value <= 1000)
    print(f"  started within a second of the slot: {within} of {len(begun)}")
    return not missed and not doubled and not unexpected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of firing")
    parser.add_argument("--dispatchers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds between kills")
    parser.add_argument("--down", type=float, default=2.0, help="seconds a killed one stays down")
    parser.add_argument("--backend", default="postgres", choices=("postgres", "rabbitmq", "redis"))
    args = parser.parse_args()
    bench.BACKEND = args.backend
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
