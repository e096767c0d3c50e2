"""Fairness: user A enqueues a backlog (10,000 runs), then user B 10 — how long B's runs wait
to start under a queue's ``fifo`` and ``fair`` policies (p50 and max of ``started_at -
created_at``), and how many of A's runs started before B's last one.

In process on a fresh database (the scenario is ``tests/fairness_scenario.py``: the batch
trigger use case, a relay loop every 50 ms, ``--slots`` workers taking messages from the queue
in the order published, each run taking ``--run-ms``).

Usage:  uv run python scripts/bench_fairness.py [--a-runs 10000] [--b-runs 10] [--slots 16]
            [--fair-in-flight 10] [--run-ms 0] [--policies fair,fifo] [--database sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fairness_scenario import FairnessResult, run_scenario  # noqa: E402
from scheduler_domain.queue_settings import Fairness  # noqa: E402
from scheduler_infrastructure.persistence.engine import create_engine  # noqa: E402
from scheduler_infrastructure.persistence.migrations import upgrade  # noqa: E402
from scheduler_infrastructure.persistence.unit_of_work import SqlUnitOfWorkFactory  # noqa: E402

ADMIN = os.environ.get(
    "SCHEDULER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _database(kind: str, workdir: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / f'fair-{secrets.token_hex(4)}.db'}", None
    name = f"bench_fair_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(ADMIN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}", name


async def _drop(name: str | None) -> None:
    if name is None:
        return
    connection = await asyncpg.connect(ADMIN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _one(args: argparse.Namespace, policy: Fairness, workdir: Path) -> FairnessResult:
    url, name = await _database(args.database, workdir)
    try:
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url, pool_size=10)
        try:
            return await run_scenario(
                SqlUnitOfWorkFactory(engine),
                policy=policy,
                a_runs=args.a_runs,
                b_runs=args.b_runs,
                slots=args.slots,
                run_seconds=args.run_ms / 1000,
                fair_in_flight=args.fair_in_flight,
                timeout=args.timeout,
            )
        finally:
            await engine.dispose()
    finally:
        await _drop(name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-runs", type=int, default=10_000)
    parser.add_argument("--b-runs", type=int, default=10)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--fair-in-flight", type=int, default=10)
    parser.add_argument("--run-ms", type=float, default=0.0)
    parser.add_argument("--policies", default="fair,fifo")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    print(
        f"A {args.a_runs} runs, then B {args.b_runs}; {args.slots} slots, run {args.run_ms} ms, "
        f"fair_in_flight {args.fair_in_flight}, {args.database}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for policy in (Fairness(p) for p in args.policies.split(",")):
            result = await _one(args, policy, Path(tmp))
            print(
                f"{result.policy:5}  B start delay p50 {result.p50:8.3f} s  max "
                f"{result.worst:8.3f} s  A runs started before B's last: "
                f"{result.a_started_before_b:6}  ({result.throughput:.0f} runs/s)",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
