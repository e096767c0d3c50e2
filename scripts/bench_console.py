"""Bench: the console's server time per page with 10,000 tasks and 100,000 runs on PostgreSQL.

A fresh database (created and dropped here) gets one task and one run through the API, cloned
in SQL into 10,000 tasks and 100,000 runs (statuses and finish times spread); then each page is
requested 7 times in-process over ASGI (the server's time, no network) as a signed-in admin,
and the median and maximum are printed. Run from the repository root:
``uv run --frozen --no-sync python scripts/bench_console.py``.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

sys.path[:0] = ["tests", "tests/integration/api"]

from api_harness import running_api  # noqa: E402 (the test helpers, found through sys.path)
from console_client import browser  # noqa: E402

from scheduler_domain.accounts import Role  # noqa: E402
from scheduler_infrastructure.persistence.engine import create_engine  # noqa: E402
from scheduler_infrastructure.persistence.migrations import upgrade  # noqa: E402
from services import POSTGRES_ADMIN_URL  # noqa: E402

TASKS = 10_000
RUNS = 100_000
REPEATS = 7
#: How the cloned runs differ from the seed run (other columns are copied).
RUN_COLUMNS = {
    "id": "gen_random_uuid()::text",
    "task_id": f"(array(select id from tasks))[1 + (g % {TASKS})]",  # noqa: S608 (a constant)
    "status": "(array['succeeded','failed','dead_lettered','cancelled','queued'])[1 + (g % 5)]",
    "idempotency_key": "'k' || g",
    "created_at": "created_at - (g || ' seconds')::interval",
    "scheduled_for": "scheduled_for - (g || ' seconds')::interval",
    "finished_at": "now() - ((g % 900) || ' seconds')::interval",
    # one run in 1,000 in a rare queue, the rest split between two busy ones
    "queue": "case when g % 1000 = 0 then 'rare' when g % 2 = 0 then 'default' else 'batch' end",
}
#: The run list's query filtered by a queue holding one run in 1,000 (see migration 0017).
QUEUE_PLAN = (
    "explain (analyze, buffers, costs off) select * from task_runs where queue = 'rare' "
    "order by created_at desc, id desc limit 51"
)
TASK_COLUMNS = {"id": "gen_random_uuid()::text", "name": "name || '-' || g"}


async def admin_execute(sql: str) -> None:
    engine = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(sql))
    await engine.dispose()


async def clone(connection: AsyncConnection, table: str, copies: int, how: dict[str, str]) -> None:
    rows = await connection.execute(
        text(
            "select column_name from information_schema.columns where table_name = :t "
            "order by ordinal_position"
        ),
        {"t": table},
    )
    columns = [row[0] for row in rows]
    chosen = ", ".join(how.get(c, c) for c in columns)
    await connection.execute(
        text(
            f"insert into {table} ({', '.join(columns)}) "  # noqa: S608 (our own names)
            f"select {chosen} from {table}, generate_series(1, {copies}) g"
        )
    )


async def main() -> None:
    name = f"scheduler_bench_console_{secrets.token_hex(4)}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, rendered)
        engine = create_engine(rendered, pool_size=5)
        async with running_api(engine) as api:
            admin = await api.user("root", Role.ADMIN)
            task = await api.task(admin, "seed", schedule={"cron": "*/5 * * * *"})
            await api.run(admin, task["id"])
            async with engine.begin() as connection:
                await clone(connection, "tasks", TASKS - 1, TASK_COLUMNS)
                await clone(connection, "task_runs", RUNS - 1, RUN_COLUMNS)
                await connection.execute(text("analyze"))
                run_id = (
                    await connection.execute(text("select id from task_runs limit 1"))
                ).scalar()
            print(f"{TASKS} tasks, {RUNS} runs")
            async with engine.connect() as connection:
                plan = await connection.execute(text(QUEUE_PLAN))
                print("runs of a rare queue:", *(f"  {row[0]}" for row in plan), sep="\n")
            pages = ["/ui", "/ui/tasks", f"/ui/tasks/{task['id']}", "/ui/runs"]
            pages += ["/ui/runs?status=failed", f"/ui/runs/{run_id}", "/ui/queues"]
            pages += ["/ui/workers", "/ui/dead-letters", "/ui/api-keys", "/ui/users"]
            pages += ["/ui/runs?queue=rare", "/ui/runs?queue=batch&status=failed"]
            pages += ["/ui/runs?queue=empty", "/ui/webhooks"]
            async with browser(api) as visitor:
                await visitor.sign_in("root")
                for path in pages:
                    times = []
                    for _ in range(REPEATS):
                        started = time.perf_counter()
                        response = await visitor.page(path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, (path, response.text[:300])
                    median, worst = statistics.median(times), max(times)
                    print(f"{path[:40]:42s} median {median:6.1f} ms  max {worst:6.1f} ms")
        await engine.dispose()
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
