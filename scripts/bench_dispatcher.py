"""Dispatcher benchmarks: firing lateness, idle CPU against the number of tasks, a 10,000 burst.

Each phase starts one real ``scheduler-dispatcher`` process (production defaults from
``config/default.toml``: ``max_sleep_seconds`` 1, batch 500, relay every 0.5 s) on a fresh
PostgreSQL database, created for the phase and dropped after it. Tasks are inserted in bulk with
one SQL statement (``INSERT … SELECT … generate_series``), which also wakes the dispatcher
(PostgreSQL ``LISTEN``), as any task write does. No worker runs: the runs stay queued (the
postgres queue holds their messages), which is all the figures need.

(a) lateness: ``--due`` tasks (1,000) with a one-off schedule in the same second, a few seconds
    ahead; per run, from the slot to: ``created_at`` (fired), ``queued_at`` (queued; both are
    negative when the slot was fired ahead), *published* — the moment a worker could claim it:
    the later of the notification of the commit that wrote its message and its ``not_before``
    (a message fired ahead is claimable from its slot on) — and *delivered*: when a real
    postgres-queue consumer in this script (prefetch = all of them, woken by the notifications
    as a worker is) received it. p50, p99 and max of each.
(b) idle CPU: 1,000 / 10,000 / 100,000 enabled tasks whose next fire is a day away (interval
    schedules); after a settle period the dispatcher's CPU (user + system, ``/proc/<pid>/stat``)
    and that of the database's server processes is read over ``--idle-window`` seconds, and
    scaled to a minute.
(c) burst: ``--burst`` tasks (10,000) due at once; from the slot to the last run fired and to
    the last run queued (published), and the runs/s that makes.

``--fire-ahead S`` sets ``dispatcher.fire_ahead_seconds`` (default: the configuration's, 2 s;
0 fires every slot at the slot, as before fire-ahead).

``--backend rabbitmq|redis`` runs phases a and c with that queue (the database stays
PostgreSQL); *published* is then the consumer's *delivered* (no commit notification to hear).

Usage:  uv run python scripts/bench_dispatcher.py [--phases a,b,c] [--repeat 3] [--fire-ahead S]
        [--backend postgres|rabbitmq|redis]
Needs PostgreSQL on 127.0.0.1 (``SCHEDULER_TEST_POSTGRES_URL`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from scheduler_domain.schedules import IntervalSchedule, OnceSchedule, Schedule
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.mappers import task_to_row
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.queues.factory import build_run_queue

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OWNER = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def _dsn(database: str | None = None) -> str:
    url = make_url(ADMIN).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(_dsn())
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux ``/proc``); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Phase:
    """A fresh database with one dispatcher on it, and a connection for the bench."""

    database: str
    connection: asyncpg.Connection
    dispatcher: subprocess.Popen[bytes]
    logs: Path
    prefix: str

    async def backend_pids(self) -> list[int]:
        """The database's server processes other than the bench's own connection."""
        rows = await self.connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return [row["pid"] for row in rows]


#: Where ``--profile`` writes the dispatcher's cProfile stats (one file per phase), if set.
PROFILE_DIR: Path | None = None
#: ``dispatcher.fire_ahead_seconds`` for the dispatcher (None: the configuration's default).
FIRE_AHEAD: float | None = None
#: The queue backend of phases a and c (``--backend``); b always runs on postgres.
BACKEND = "postgres"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _dispatcher_command(name: str) -> list[str]:
    if PROFILE_DIR is None:
        return [str(BIN / "scheduler-dispatcher")]
    stats = PROFILE_DIR / f"dispatcher-{name}.prof"
    code = "import cProfile, sys; from scheduler_dispatcher.main import main; "
    code += "cProfile.run('main()', sys.argv[1])"
    return [sys.executable, "-c", code, str(stats)]


@asynccontextmanager
async def phase(name: str, backend: str = "postgres") -> AsyncIterator[Phase]:
    database = f"scheduler_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{database}"')
    url = make_url(ADMIN).set(drivername="postgresql+asyncpg", database=database)
    url_text = url.render_as_string(hide_password=False)
    logs = Path(tempfile.mkdtemp(prefix=f"bench-dispatcher-{name}-"))
    dispatcher: subprocess.Popen[bytes] | None = None
    connection: asyncpg.Connection | None = None
    prefix = f"bench{secrets.token_hex(3)}"
    try:
        await asyncio.to_thread(upgrade, url_text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env.update(
            SCHEDULER_CONFIG=str(ROOT / "config" / "default.toml"),
            SCHEDULER__DATABASE__URL=url_text,
            SCHEDULER__QUEUE__BACKEND=backend,
            SCHEDULER__RABBITMQ__URL=RABBITMQ_URL.replace("guest:guest@", "guest@"),
            SCHEDULER__RABBITMQ__PASSWORD="guest",  # noqa: S106 - the local broker's default
            SCHEDULER__REDIS__URL=REDIS_URL if backend == "redis" else "",
            SCHEDULER__QUEUE__PREFIX=prefix,
            SCHEDULER__LOGGING__LEVEL="WARNING",
            SCHEDULER__LOGGING__FORMAT="json",
            SCHEDULER__DISPATCHER__METRICS_PORT="0",
        )
        if FIRE_AHEAD is not None:
            env["SCHEDULER__DISPATCHER__FIRE_AHEAD_SECONDS"] = str(FIRE_AHEAD)
        with (logs / "dispatcher.log").open("ab") as handle:
            dispatcher = subprocess.Popen(  # noqa: S603, ASYNC220 - our own console script
                _dispatcher_command(name), env=env, stdout=handle, stderr=handle
            )
        connection = await asyncpg.connect(_dsn(database))
        await asyncio.sleep(3)  # connected, listening, first idle sleep begun
        if dispatcher.poll() is not None:
            raise RuntimeError(f"the dispatcher exited; see {logs}/dispatcher.log")
        yield Phase(database, connection, dispatcher, logs, prefix)
    finally:
        if dispatcher is not None:
            dispatcher.send_signal(signal.SIGTERM)
            try:
                dispatcher.wait(30)
            except subprocess.TimeoutExpired:
                dispatcher.kill()
        if connection is not None:
            await connection.close()
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


_COLUMNS = (
    "id, owner_id, name, description, executor, params, schedule, enabled, queue, priority,"
    " labels, strategy, timeout_seconds, retry, concurrency, max_concurrent, misfire,"
    " spread_seconds, rate_limit, trigger_rule, next_run_at, created_at, updated_at, version,"
    " team_id"
)


async def insert_tasks(
    connection: asyncpg.Connection,
    count: int,
    *,
    schedule: Schedule,
    next_run_at: datetime,
    tag: str,
) -> float:
    """``count`` enabled no-op tasks with this schedule and ``next_run_at``, in one statement
    (the columns of a template task, as the repository writes them); returns the seconds."""
    now = datetime.now(UTC)
    template = task_to_row(
        Task(
            owner_id=OWNER,
            name="template",
            executor="noop",
            schedule=schedule,
            created_at=now,
            updated_at=now,
        )
    )
    started = time.perf_counter()
    await connection.execute(
        f"INSERT INTO tasks ({_COLUMNS})"  # noqa: S608 - constants only
        " SELECT $1 || g, $2, $1 || g, '', 'noop', $3::jsonb, $4::jsonb, true, 'default', 5,"
        " $5::jsonb, 'queue', NULL, $6::jsonb, 'allow', NULL, $7::jsonb, 0, NULL, $8,"
        " $9, $10, $10, 1, $2 FROM generate_series(1, $11::int) AS g",
        f"{tag}-",
        OWNER,
        json.dumps(template["params"]),
        json.dumps(template["schedule"]),
        json.dumps(template["labels"]),
        json.dumps(template["retry"]),
        json.dumps(template["misfire"]),
        template["trigger_rule"],
        next_run_at,
        now,
        count,
    )
    return time.perf_counter() - started


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def _wait_for_runs(
    connection: asyncpg.Connection, count: int, *, within: float, column: str = "queued_at"
) -> None:
    deadline = time.monotonic() + within
    while True:
        done = await connection.fetchval(
            f"SELECT count(*) FROM task_runs WHERE {column} IS NOT NULL"  # noqa: S608
        )
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {count} runs after {within} s")
        await asyncio.sleep(0.25)


async def fire_at_once(count: int, *, lead: float = 4.0) -> dict[str, Any]:
    """``count`` one-off tasks due in the same second; lateness per run, and the burst's end."""
    async with phase(f"due-{count}", BACKEND) as p:
        slot = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead + 1)
        inserted = await insert_tasks(
            p.connection, count, schedule=OnceSchedule(slot), next_run_at=slot, tag="due"
        )
        if datetime.now(UTC) >= slot:
            raise RuntimeError(f"inserting took {inserted:.1f} s, past the slot: raise --lead")
        # The postgres queue NOTIFYs at the commit that inserts messages: when a listening
        # worker learns of them. The k-th notification is the k-th firing transaction's.
        notified: list[datetime] = []
        listener = await asyncpg.connect(_dsn(p.database))
        await listener.add_listener(
            f"{p.prefix}_queue", lambda *_: notified.append(datetime.now(UTC))
        )
        delivered: dict[str, datetime] = {}
        cpu_before = _cpu_seconds(p.dispatcher.pid)
        async with _consumer(p, count, delivered) as all_delivered:
            await _wait_for_runs(p.connection, count, within=lead + 120)
            cpu = _cpu_seconds(p.dispatcher.pid) - cpu_before
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_delivered.wait(), 30)
        await asyncio.sleep(0.2)  # the last notification
        await listener.close()
        rows = await p.connection.fetch(
            "SELECT id, scheduled_for, created_at, queued_at, not_before,"
            " xmin::text::bigint AS tx FROM task_runs"
        )
        fired = [(r["created_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in rows]
        queued = [(r["queued_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in rows]
        assert len(rows) == count, len(rows)
        assert all(r["scheduled_for"] == slot for r in rows)
        assert len(delivered) == count, f"{len(delivered)} of {count} runs delivered"
        got = [(delivered[r["id"]] - r["scheduled_for"]).total_seconds() * 1000 for r in rows]
        transactions = sorted({r["tx"] for r in rows})
        visible: list[float] = []
        if len(transactions) == len(notified):
            at = dict(zip(transactions, notified, strict=True))
            visible = [
                (max(at[r["tx"]], r["not_before"] or at[r["tx"]]) - r["scheduled_for"])
                / timedelta(milliseconds=1)
                for r in rows
            ]
        if BACKEND != "postgres":
            visible = got  # a broker has no commit notification: the consumer's view
        return {
            "delivered_p50_ms": statistics.median(got),
            "delivered_p99_ms": _percentile(got, 0.99),
            "delivered_max_ms": max(got),
            "transactions": len(transactions),
            "visible_p50_ms": statistics.median(visible) if visible else float("nan"),
            "visible_p99_ms": _percentile(visible, 0.99) if visible else float("nan"),
            "visible_max_ms": max(visible) if visible else float("nan"),
            "tasks": count,
            "fired_p50_ms": statistics.median(fired),
            "fired_p99_ms": _percentile(fired, 0.99),
            "fired_max_ms": max(fired),
            "queued_p50_ms": statistics.median(queued),
            "queued_p99_ms": _percentile(queued, 0.99),
            "queued_max_ms": max(queued),
            # From the slot to the last one published; None when all were ready at the slot.
            "runs_per_second": (
                count / (last / 1000) if (last := max(visible or queued)) > 0 else None
            ),
            "dispatcher_cpu_s": cpu,
            "insert_s": inserted,
        }


@asynccontextmanager
async def _consumer(
    p: Phase, count: int, delivered: dict[str, datetime]
) -> AsyncIterator[asyncio.Event]:
    """A postgres-queue consumer of the ``default`` queue, as a worker has (listening, claiming
    up to ``count`` at a time), recording when each run's message reaches it; the event is set
    once ``count`` have."""
    all_delivered = asyncio.Event()
    engine = create_engine(
        make_url(ADMIN)
        .set(drivername="postgresql+asyncpg", database=p.database)
        .render_as_string(hide_password=False),
        pool_size=2,
    )
    queue = build_run_queue(
        backend=BACKEND,
        engine=engine,
        prefix=p.prefix,
        rabbitmq_url=RABBITMQ_URL,
        redis_url=REDIS_URL,
    )

    async def consume() -> None:
        async with queue.consume(["default"], prefetch=count) as deliveries:
            taken = []
            async for delivery in deliveries:
                delivered.setdefault(delivery.message.run_id, datetime.now(UTC))
                taken.append(delivery)
                if len(delivered) >= count:
                    all_delivered.set()
                    # Acked once all are in (acking one by one would delay the next
                    # delivery's stamp), so that nothing is left in a shared broker.
                    for each in taken:
                        await queue.ack(each)
                    taken.clear()

    try:
        async with queue:
            task = asyncio.create_task(consume())
            try:
                yield all_delivered
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await engine.dispose()
        await _clean_broker(p.prefix)


async def _clean_broker(prefix: str, queues: Sequence[str] = ("default",)) -> None:
    """Delete what a run left in RabbitMQ (these queues) or Redis (every key of the prefix);
    the database is dropped anyway."""
    if BACKEND == "rabbitmq":
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            for queue in queues:
                for name in (f"{prefix}.{queue}", f"{prefix}.{queue}.dead"):
                    await channel.queue_delete(name)
        finally:
            await connection.close()
    elif BACKEND == "redis":
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def cpu_over(p: Phase, window: float) -> tuple[float, float, float]:
    """``(seconds elapsed, the dispatcher's CPU seconds, its database backends' CPU seconds)``
    over ``window`` seconds from now."""
    backends = await p.backend_pids()
    before = _cpu_seconds(p.dispatcher.pid)
    backends_before = {pid: _cpu_seconds(pid) for pid in backends}
    started = time.monotonic()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - started
    used = _cpu_seconds(p.dispatcher.pid) - before
    db_used = sum(max(_cpu_seconds(pid) - cpu, 0.0) for pid, cpu in backends_before.items())
    return elapsed, used, db_used


async def idle_cpu(sizes: list[int], *, window: float, settle: float) -> list[dict[str, Any]]:
    """The dispatcher's CPU per idle minute as enabled tasks far from due are added."""
    results = []
    async with phase("idle") as p:
        total = 0
        for size in sizes:
            now = datetime.now(UTC)
            inserted = await insert_tasks(
                p.connection,
                size - total,
                schedule=IntervalSchedule(timedelta(days=1)),
                next_run_at=now + timedelta(days=1),
                tag=f"idle{size}",
            )
            total = size
            await p.connection.execute("ANALYZE tasks")
            await asyncio.sleep(settle)
            elapsed, used, db_used = await cpu_over(p, window)
            runs = await p.connection.fetchval("SELECT count(*) FROM task_runs")
            assert runs == 0, f"{runs} runs fired: the tasks were meant to stay idle"
            results.append(
                {
                    "tasks": size,
                    "window_s": elapsed,
                    "dispatcher_cpu_s_per_min": used * 60 / elapsed,
                    "postgres_cpu_s_per_min": db_used * 60 / elapsed,
                    "insert_s": inserted,
                }
            )
            print(
                f"  {size:>7} tasks: dispatcher {used * 60 / elapsed:6.3f} CPU s/min, "
                f"its PostgreSQL backends {db_used * 60 / elapsed:6.3f} CPU s/min "
                f"(over {elapsed:.0f} s, load {_loadavg()})",
                flush=True,
            )
    return results


def _print_fire(label: str, r: dict[str, Any]) -> None:
    speed = r["runs_per_second"]
    rate = "all published at the slot" if speed is None else f"{speed:.0f} runs/s to the last"
    print(
        f"  {label}: slot -> ms, p50 / p99 / max: fired {r['fired_p50_ms']:.0f} / "
        f"{r['fired_p99_ms']:.0f} / {r['fired_max_ms']:.0f}; queued {r['queued_p50_ms']:.0f} / "
        f"{r['queued_p99_ms']:.0f} / {r['queued_max_ms']:.0f}; published "
        f"{r['visible_p50_ms']:.0f} / {r['visible_p99_ms']:.0f} / {r['visible_max_ms']:.0f}; "
        f"delivered {r['delivered_p50_ms']:.0f} / {r['delivered_p99_ms']:.0f} / "
        f"{r['delivered_max_ms']:.0f}\n"
        f"  {' ' * len(label)}  {r['transactions']} transactions, {rate}, "
        f"dispatcher CPU {r['dispatcher_cpu_s']:.2f} s "
        f"(load {_loadavg()})",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Phases: a = lateness, b = idle CPU, c = burst (see the module docstring).",
    )
    parser.add_argument("--phases", default="a,b,c", help="which phases, comma-separated")
    parser.add_argument("--due", type=int, default=1000, help="tasks due in one second (a)")
    parser.add_argument("--burst", type=int, default=10_000, help="tasks due at once (c)")
    parser.add_argument(
        "--idle-sizes",
        default="1000,10000,100000",
        help="enabled task counts for the idle CPU curve (b), ascending",
    )
    parser.add_argument(
        "--idle-window", type=float, default=30.0, help="seconds of CPU measured per size (b)"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after an insert before measuring (b)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of a and c (medians)")
    parser.add_argument(
        "--backend",
        default="postgres",
        choices=("postgres", "rabbitmq", "redis"),
        help="queue backend of phases a and c (the database is always PostgreSQL)",
    )
    parser.add_argument(
        "--fire-ahead",
        type=float,
        default=None,
        help="dispatcher.fire_ahead_seconds (default: the configuration's)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the dispatcher under cProfile, writing dispatcher-<phase>.prof here",
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        global PROFILE_DIR
        PROFILE_DIR = args.profile
    phases = set(args.phases.split(","))
    global BACKEND, FIRE_AHEAD
    BACKEND = args.backend
    if args.fire_ahead is not None:
        FIRE_AHEAD = args.fire_ahead
    print(f"load average at the start: {_loadavg()}", flush=True)
    if "a" in phases:
        print(f"(a) lateness, {args.due} tasks due in the same second", flush=True)
        rounds = [await fire_at_once(args.due) for _ in range(args.repeat)]
        for i, r in enumerate(rounds, 1):
            _print_fire(f"round {i}", r)
        _summary("a", rounds, target=50.0)
    if "b" in phases:
        print("(b) idle dispatcher CPU per minute, tasks next due in a day", flush=True)
        sizes = [int(s) for s in args.idle_sizes.split(",")]
        curve = await idle_cpu(sizes, window=args.idle_window, settle=args.settle)
        lowest = min(c["dispatcher_cpu_s_per_min"] for c in curve)
        highest = max(c["dispatcher_cpu_s_per_min"] for c in curve)
        print(f"  dispatcher CPU s/min from {lowest:.3f} to {highest:.3f} across the sizes")
    if "c" in phases:
        print(f"(c) burst, {args.burst} tasks due at once", flush=True)
        rounds = [await fire_at_once(args.burst, lead=8.0) for _ in range(args.repeat)]
        for i, r in enumerate(rounds, 1):
            _print_fire(f"round {i}", r)
        _summary("c", rounds, target=None)
    print(f"load average at the end: {_loadavg()}", flush=True)


def _summary(name: str, rounds: list[dict[str, Any]], *, target: float | None) -> None:
    seen = statistics.median(r["visible_p99_ms"] for r in rounds)
    got = statistics.median(r["delivered_p99_ms"] for r in rounds)
    if len(rounds) > 1:
        last = statistics.median(r["visible_max_ms"] for r in rounds)
        print(
            f"  median of {len(rounds)}: p99 published {seen:.0f} ms, delivered {got:.0f} ms; "
            f"all published {last:.0f} ms"
        )
    if target is not None:
        verdict = "met" if seen <= target else "NOT met"
        print(f"  target p99 <= {target:.0f} ms (slot -> published): {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
