"""The noop executor: the benchmark baseline."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from scheduler_application.ports.executor import ExecutionContext
from scheduler_worker.executors import NoopExecutor

pytestmark = pytest.mark.timeout(10)

ContextFactory = Callable[..., ExecutionContext]


async def test_succeeds_immediately(context_for: ContextFactory) -> None:
    result = await NoopExecutor().execute(context_for({}))

    assert result.status == "succeeded"
    assert result.error is None


async def test_fails_on_request(context_for: ContextFactory) -> None:
    result = await NoopExecutor().execute(context_for({"fail": True}))

    assert result.status == "failed"
    assert result.error == "failure requested by the task (fail: true)"


async def test_sleeps_then_succeeds(context_for: ContextFactory) -> None:
    started = time.monotonic()

    result = await NoopExecutor().execute(context_for({"sleep_seconds": 0.1}, timeout=5))

    assert result.status == "succeeded"
    assert time.monotonic() - started >= 0.1


async def test_sleep_longer_than_the_timeout_times_out(context_for: ContextFactory) -> None:
    started = time.monotonic()

    result = await NoopExecutor().execute(context_for({"sleep_seconds": 60}, timeout=0.1))

    assert result.status == "timed_out"
    assert time.monotonic() - started < 1
