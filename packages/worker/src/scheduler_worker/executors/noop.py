"""The ``noop`` executor: does nothing, quickly — the baseline that benchmarks measure against.

The results are shared constants (no allocation per run); treat them as read-only.
"""

from __future__ import annotations

import asyncio

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_worker.executors.results import timed_out

_SUCCEEDED = ExecutionResult(status="succeeded")
_FAILED = ExecutionResult(status="failed", error="failure requested by the task (fail: true)")
_BAD_SLEEP = ExecutionResult(
    status="failed", error="invalid parameters (params.sleep_seconds): not a number"
)


class NoopExecutor:
    __slots__ = ()
    name = "noop"

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        params = context.params
        if not params:
            return _SUCCEEDED
        sleep = params.get("sleep_seconds", 0)
        if not isinstance(sleep, int | float) or isinstance(sleep, bool):
            return _BAD_SLEEP
        if sleep > 0:
            timeout = context.timeout_seconds
            if timeout is not None and sleep > timeout:
                await asyncio.sleep(timeout)
                return timed_out(timeout)
            await asyncio.sleep(sleep)
        return _FAILED if params.get("fail") is True else _SUCCEEDED
