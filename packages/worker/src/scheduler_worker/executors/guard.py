"""The one way the worker calls an executor: whatever the executor does, a result comes back.

Executors enforce their own timeout; the guard is the safety net for one that overruns it
(by ``grace_seconds``, which should exceed the shell executor's kill grace) or that raises.
Cancellation is not swallowed: it is how the worker aborts a run.
"""

from __future__ import annotations

import asyncio
import logging

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult, Executor
from scheduler_worker.executors.results import describe_exception, failed

logger = logging.getLogger(__name__)


async def run_executor(
    executor: Executor, context: ExecutionContext, *, grace_seconds: float = 10.0
) -> ExecutionResult:
    name = getattr(executor, "name", type(executor).__name__)
    limit = context.timeout_seconds
    guard = asyncio.timeout(None if limit is None else limit + grace_seconds)
    try:
        async with guard:
            result = await executor.execute(context)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and guard.expired():
            logger.warning("executor %r overran the timeout of run %s", name, context.run_id)
            return ExecutionResult(
                status="timed_out",
                error=f"timed out after {limit:g} s (the {name} executor did not stop in time)",
            )
        logger.exception("executor %r raised while running run %s", name, context.run_id)
        return failed(f"executor {name!r} crashed: {describe_exception(exc)}")
    if not isinstance(result, ExecutionResult):
        logger.error("executor %r returned %r instead of an ExecutionResult", name, result)
        return failed(f"executor {name!r} returned {type(result).__name__}, not a result")
    return result
