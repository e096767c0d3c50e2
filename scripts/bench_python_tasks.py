"""Start latency of ``python`` tasks: from the executor's ``execute()`` call to the task's
function starting, for the sandbox pool (warm interpreters, one task).

The function is ``time:perf_counter``: it returns the instant it started, on the same
monotonic clock the caller reads (CLOCK_MONOTONIC is system-wide on Linux).

    uv run --no-sync python scripts/bench_python_tasks.py [--runs 2000] [--max-runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from scheduler_application.ports.executor import ExecutionContext
from scheduler_worker.executors import PythonExecutor


async def measure(runs: int, max_runs: int) -> tuple[list[float], list[float]]:
    executor = PythonExecutor(pool_size=2, max_runs_per_process=max_runs)
    await executor.warm_up()
    latencies, round_trips = [], []
    try:
        for index in range(runs):
            context = ExecutionContext(
                run_id=f"run-{index}",
                task_id="bench",
                attempt=1,
                params={"callable": "time:perf_counter"},
            )
            called = time.perf_counter()
            result = await executor.execute(context)
            round_trips.append(time.perf_counter() - called)
            latencies.append(result.result["return_value"] - called)
    finally:
        await executor.aclose()
    return latencies, round_trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--max-runs", type=int, default=100, help="runs per interpreter")
    options = parser.parse_args()
    starts, trips = asyncio.run(measure(options.runs, options.max_runs))
    p50, p99 = _percentiles(starts[50:])
    t50, t99 = _percentiles(trips[50:])
    print(
        f"python task start latency (sandbox pool, max {options.max_runs} runs per"
        f" interpreter, {len(starts) - 50} runs): p50 {p50:.2f} ms, p99 {p99:.2f} ms;"
        f" execute() round trip p50 {t50:.2f} ms, p99 {t99:.2f} ms;"
        f" load {os.getloadavg()[0]:.2f}"
    )


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


if __name__ == "__main__":
    main()
