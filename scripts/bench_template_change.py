"""A template change with many subscriptions: how long it takes, and how many statements.

A template change rewrites every subscription in its transaction (new executor params filled
in with each subscriber's parameters, new policies, the new version) and logs a
``task.updated`` event for each. For each count given, on a fresh PostgreSQL database migrated
to head: one template (``noop``, params ``{"sleep_seconds": "{{n}}"}``, a JSON Schema for
``n``) and that many subscriptions of it (each user's own, with its own ``n``), inserted in
bulk with one SQL statement; then ``--changes`` changes of the template's priority through
``TemplateService.update`` (the use case the API calls), each timed, with the statements the
unit of work sent counted (cursor executions). After each change every subscription is checked
to carry the new version and priority.

Usage:  uv run --frozen --no-sync python scripts/bench_template_change.py [--counts 1000,10000]
        [--changes 3]
Needs PostgreSQL on 127.0.0.1 (``SCHEDULER_TEST_POSTGRES_URL`` to point elsewhere); the
database is dropped after each count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url

from scheduler_application.accounts.access import Principal
from scheduler_application.templates.service import TemplateService
from scheduler_application.testing import OPEN_EXECUTOR_POLICY, FakeClock
from scheduler_domain.accounts import Role
from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.engine import create_engine
from scheduler_infrastructure.persistence.mappers import task_to_row
from scheduler_infrastructure.persistence.migrations import upgrade
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory

ADMIN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
OPERATOR = Principal("bench-operator", Role.OPERATOR)
TEMPLATE: dict[str, Any] = {
    "name": "nap",
    "executor": "noop",
    "params": {"sleep_seconds": "{{n}}"},
    "params_schema": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 60}},
        "required": ["n"],
        "additionalProperties": False,
    },
    "schedule": {"interval_seconds": 3600},
    "policies": {"priority": 5, "spread_seconds": 60},
}


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(ADMIN))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def insert_subscriptions(url: str, template_id: str, count: int) -> float:
    """``count`` subscriptions of the template in one statement, as ``subscribe`` writes
    them (rendered params, template version 1, the template's policies); seconds taken."""
    now = datetime.now(UTC)
    row = task_to_row(Task(owner_id="x", name="x", executor="noop", created_at=now, updated_at=now))
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        started = time.perf_counter()
        await connection.execute(
            "INSERT INTO tasks (id, owner_id, team_id, name, description, executor, params,"
            " schedule, enabled, queue, priority, labels, strategy, retry, concurrency, misfire,"
            " spread_seconds, trigger_rule, next_run_at, created_at, updated_at, version,"
            " template_id, template_version, template_params)"
            " SELECT 'sub-' || g, 'user-' || g, 'user-' || g, 'nap', '', 'noop',"
            " jsonb_build_object('sleep_seconds', g % 60), $1::jsonb, true, 'default', 5,"
            " '[]'::jsonb, 'queue', $2::jsonb, 'allow', $3::jsonb, 60, 'all_success',"
            " $4::timestamptz + interval '1 day', $4, $4, 1, $5, 1,"
            " jsonb_build_object('n', g % 60)"
            " FROM generate_series(0, $6::int - 1) AS g",
            json.dumps({"interval_seconds": 3600}),
            json.dumps(row["retry"]),
            json.dumps(row["misfire"]),
            now,
            template_id,
            count,
        )
        await connection.execute("ANALYZE tasks")
        return time.perf_counter() - started
    finally:
        await connection.close()


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def one_count(count: int, changes: int) -> None:
    database = f"i18fix_bench_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{database}"')
    url = make_url(ADMIN).set(drivername="postgresql+asyncpg", database=database)
    url_text = url.render_as_string(hide_password=False)
    engine = None
    try:
        await asyncio.to_thread(upgrade, url_text)
        engine = create_engine(url_text, pool_size=2)
        statements = 0

        def count_statement(*_: object) -> None:
            nonlocal statements
            statements += 1

        event.listen(engine.sync_engine, "before_cursor_execute", count_statement)
        service = TemplateService(
            uow_factory=SqlUnitOfWorkFactory(engine),
            clock=FakeClock(datetime.now(UTC)),
            executor_policy=OPEN_EXECUTOR_POLICY,
        )
        template = await service.create(TEMPLATE, principal=OPERATOR)
        inserted = await insert_subscriptions(url_text, template.id, count)
        timings: list[float] = []
        for change in range(changes):
            priority = 6 + change
            statements = 0
            started = time.perf_counter()
            changed = await service.update(
                template.id, {"policies": {"priority": priority}}, principal=OPERATOR
            )
            timings.append(time.perf_counter() - started)
            used = statements
            check = await asyncpg.connect(_asyncpg_dsn(url_text))
            try:
                behind = await check.fetchval(
                    "SELECT count(*) FROM tasks WHERE template_id = $1"
                    " AND (template_version <> $2 OR priority <> $3)",
                    template.id,
                    changed.version,
                    priority,
                )
                logged = await check.fetchval(
                    "SELECT count(*) FROM run_events WHERE kind = 'task.updated'"
                    " AND detail->>'template_version' = $1",
                    str(changed.version),
                )
            finally:
                await check.close()
            assert behind == 0, f"{behind} subscriptions not rewritten"
            assert logged == count, f"{logged} task.updated events, {count} expected"
            print(
                f"  {count:>6} subscriptions: change {change + 1} took {timings[-1]:7.3f} s,"
                f" {used} statements",
                flush=True,
            )
        print(
            f"{count:>6} subscriptions (inserted in {inserted:.1f} s): median"
            f" {statistics.median(timings):.3f} s per template change"
            f" ({statistics.median(timings) / count * 1000:.3f} ms per subscription);"
            f" load {_loadavg()}",
            flush=True,
        )
    finally:
        if engine is not None:
            await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,10000")
    parser.add_argument("--changes", type=int, default=3)
    args = parser.parse_args()
    for count in (int(c) for c in args.counts.split(",")):
        await one_count(count, args.changes)


if __name__ == "__main__":
    asyncio.run(main())
