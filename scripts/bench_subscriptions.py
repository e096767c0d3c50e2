"""Many users, one fleet: 300 templates x 1,000 users = 300,000 subscriptions on intervals.

Each subscription is a task made from a template (``template_id``/``template_version``), owned
by its user (in the user's personal team), on an interval schedule with a spread window, as
``POST .../subscriptions`` makes them. They are inserted in bulk with one SQL statement per
phase, and one real ``scheduler-dispatcher`` process (production defaults,
``config/default.toml``) runs on a fresh PostgreSQL database; no worker runs (the runs stay
queued in the postgres queue, which is all the figures need). Two phases:

(idle) every subscription next due in a day: the dispatcher's CPU per minute (and that of the
       database's server processes) at 1,000 and at all subscriptions — flat means the idle
       cost does not grow with the number of subscriptions.
(steady) every subscription due every ``--every`` seconds (default 600: 500 slots/s on
       average), their first slots spread evenly over the first interval, each slot spread
       by up to ``--spread`` seconds: over ``--window`` seconds, runs fired per second, the
       lateness of each run's creation behind its slot and of its queueing behind its spread
       instant (``not_before``) — p50 / p99 / max — and the dispatcher's CPU per minute.

Usage:  uv run python scripts/bench_subscriptions.py [--templates 300] [--users 1000]
        [--every 600] [--spread 60] [--window 60] [--phases idle,steady]
Needs PostgreSQL on 127.0.0.1 (``SCHEDULER_TEST_POSTGRES_URL`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dispatcher import (
    _loadavg,
    _percentile,
    cpu_over,
    phase,
)

from scheduler_domain.schedules import IntervalSchedule
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.mappers import task_to_row

_COLUMNS = (
    "id, owner_id, name, description, executor, params, schedule, enabled, queue, priority,"
    " labels, strategy, timeout_seconds, retry, concurrency, max_concurrent, misfire,"
    " spread_seconds, rate_limit, trigger_rule, next_run_at, created_at, updated_at, version,"
    " template_id, template_version, template_params, team_id"
)


async def insert_templates(connection: asyncpg.Connection, count: int) -> None:
    now = datetime.now(UTC)
    await connection.execute(
        "INSERT INTO templates (id, name, description, executor, params, params_schema,"
        " schedule, min_interval_seconds, allow_custom_schedule, policies, created_by,"
        " created_at, updated_at, version)"
        " SELECT 'tpl-' || g, 'type-' || g, '', 'noop', '{}'::jsonb,"
        " '{\"type\": \"object\"}'::jsonb, NULL, 60, true, '{}'::jsonb, 'bench', $1, $1, 1"
        " FROM generate_series(0, $2::int - 1) AS g",
        now,
        count,
    )


async def insert_subscriptions(
    connection: asyncpg.Connection,
    *,
    templates: int,
    users: int,
    every: timedelta,
    spread: timedelta,
    first_at: datetime,
    stagger: timedelta,
) -> float:
    """``templates * users`` subscriptions; subscription ``g`` is user ``g / templates``'s
    subscription to template ``g % templates``, first due at ``first_at`` plus its share of
    ``stagger`` (evenly spread). Returns the seconds the insert took."""
    now = datetime.now(UTC)
    row = task_to_row(
        Task(
            owner_id="template",
            name="template",
            executor="noop",
            schedule=IntervalSchedule(every),
            created_at=now,
            updated_at=now,
        )
    )
    count = templates * users
    step_us = int(stagger.total_seconds() * 1_000_000) // max(count, 1)
    started = time.perf_counter()
    await connection.execute(
        f"INSERT INTO tasks ({_COLUMNS})"  # noqa: S608 - constants only
        " SELECT 'sub-' || g, 'user-' || (g / $1::int), 'type-' || (g % $1::int), '', 'noop',"
        " '{}'::jsonb, $2::jsonb, true, 'default', 5, '[]'::jsonb, 'queue', NULL, $3::jsonb,"
        " 'allow', NULL, $4::jsonb, $5::float8, NULL, $6,"
        " $7::timestamptz + make_interval(secs => (g * $8::bigint) / 1e6), $9, $9, 1,"
        " 'tpl-' || (g % $1::int), 1, '{}'::jsonb, 'user-' || (g / $1::int)"
        " FROM generate_series(0, $10::int - 1) AS g",
        templates,
        json.dumps(row["schedule"]),
        json.dumps(row["retry"]),
        json.dumps(row["misfire"]),
        spread.total_seconds(),
        row["trigger_rule"],
        first_at,
        step_us,
        now,
        count,
    )
    await connection.execute("ANALYZE tasks")
    return time.perf_counter() - started


async def idle(templates: int, users: int, *, window: float, settle: float) -> None:
    async with phase("subs-idle") as p:
        await insert_templates(p.connection, templates)
        day = datetime.now(UTC) + timedelta(days=1)
        small_users = min(users, max(1, 1000 // templates))
        for label, count_users in (("few", small_users), ("all", users)):
            await p.connection.execute("DELETE FROM tasks")
            seconds = await insert_subscriptions(
                p.connection,
                templates=templates,
                users=count_users,
                every=timedelta(days=1),
                spread=timedelta(0),
                first_at=day,
                stagger=timedelta(hours=1),
            )
            await asyncio.sleep(settle)
            elapsed, used, db_used = await cpu_over(p, window)
            runs = await p.connection.fetchval("SELECT count(*) FROM task_runs")
            assert runs == 0, f"{runs} runs fired: the subscriptions were meant to stay idle"
            print(
                f"  idle, {templates * count_users:>7} subscriptions ({label}; inserted in"
                f" {seconds:.1f} s): dispatcher {used * 60 / elapsed:6.3f} CPU s/min, its"
                f" PostgreSQL backends {db_used * 60 / elapsed:6.3f} CPU s/min"
                f" (over {elapsed:.0f} s, load {_loadavg()})",
                flush=True,
            )


async def steady(
    templates: int, users: int, *, every: float, spread: float, window: float, lead: float
) -> None:
    async with phase("subs-steady") as p:
        await insert_templates(p.connection, templates)
        count = templates * users
        first_at = datetime.now(UTC) + timedelta(seconds=lead)
        seconds = await insert_subscriptions(
            p.connection,
            templates=templates,
            users=users,
            every=timedelta(seconds=every),
            spread=timedelta(seconds=spread),
            first_at=first_at,
            stagger=timedelta(seconds=every),
        )
        print(f"  {count} subscriptions inserted in {seconds:.1f} s", flush=True)
        wait = (first_at - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        window_start = datetime.now(UTC)
        elapsed, used, db_used = await cpu_over(p, window)
        window_end = window_start + timedelta(seconds=elapsed)
        # The slots of the window, judged once the window's last spread instant has passed.
        await asyncio.sleep(spread + 3)
        rows = await p.connection.fetch(
            "SELECT scheduled_for, created_at, not_before, queued_at FROM task_runs"
            " WHERE scheduled_for >= $1 AND scheduled_for < $2",
            window_start,
            window_end,
        )
        expected = count * elapsed / every
        fired = [(r["created_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in rows]
        queued = [
            (r["queued_at"] - (r["not_before"] or r["scheduled_for"])).total_seconds() * 1000
            for r in rows
            if r["queued_at"] is not None
        ]
        print(
            f"  steady: {len(rows)} slots in {elapsed:.0f} s ({len(rows) / elapsed:.0f}/s;"
            f" ~{expected:.0f} expected), {len(queued)} queued;"
            f" dispatcher {used * 60 / elapsed:.2f} CPU s/min, its PostgreSQL backends"
            f" {db_used * 60 / elapsed:.2f} CPU s/min (load {_loadavg()})",
            flush=True,
        )
        if fired:
            print(
                "  created behind the slot  p50 / p99 / max:"
                f" {_percentile(fired, 0.5):.0f} / {_percentile(fired, 0.99):.0f} /"
                f" {max(fired):.0f} ms (negative: fired ahead)",
                flush=True,
            )
        if queued:
            print(
                "  queued behind not_before p50 / p99 / max:"
                f" {_percentile(queued, 0.5):.0f} / {_percentile(queued, 0.99):.0f} /"
                f" {max(queued):.0f} ms",
                flush=True,
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="idle,steady")
    parser.add_argument("--templates", type=int, default=300)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--every", type=float, default=600.0, help="interval, seconds")
    parser.add_argument("--spread", type=float, default=60.0, help="spread window, seconds")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=10.0, help="idle: seconds before")
    parser.add_argument("--lead", type=float, default=20.0, help="steady: first slot after")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    print(f"load average at the start: {_loadavg()}", flush=True)
    if "idle" in phases:
        await idle(args.templates, args.users, window=args.window, settle=args.settle)
    if "steady" in phases:
        await steady(
            args.templates,
            args.users,
            every=args.every,
            spread=args.spread,
            window=args.window,
            lead=args.lead,
        )
    print(f"load average at the end: {_loadavg()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
