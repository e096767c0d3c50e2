"""The python executor calling real functions: a module written for the test plus the stdlib."""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from scheduler_application.ports.executor import ExecutionContext
from scheduler_worker.executors import PythonExecutor

pytestmark = pytest.mark.timeout(30)

ContextFactory = Callable[..., ExecutionContext]

TARGETS = "scheduler_executor_test_targets"
SOURCE = """
import asyncio
import threading

finished = threading.Event()


def describe(a, b, *, sep="-", upper=False):
    text = f"{a}{sep}{b}"
    return {"text": text.upper() if upper else text, "pair": (a, b)}


async def fetch(delay, value, *, twice=False):
    await asyncio.sleep(delay)
    return [value, value] if twice else value


async def hang():
    await asyncio.sleep(1000)


def block(seconds):
    import time
    time.sleep(seconds)
    finished.set()
    return "done"


def explode(reason):
    raise ValueError(f"cannot do it: {reason}")


async def explode_later():
    await asyncio.sleep(0)
    raise KeyError("missing")


def leave():
    raise SystemExit(4)


def opaque():
    return object()


class Report:
    @staticmethod
    def build(name):
        return f"report {name}"
"""


@pytest.fixture(scope="module", autouse=True)
def _targets() -> Iterator[None]:
    # Readable by the unprivileged user the sandbox runs tasks as (pytest's folders are not).
    folder = Path(tempfile.mkdtemp(prefix="scheduler-targets-"))
    folder.chmod(0o755)
    (folder / f"{TARGETS}.py").write_text(textwrap.dedent(SOURCE))
    (folder / f"{TARGETS}.py").chmod(0o644)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.syspath_prepend(str(folder))
            yield
            sys.modules.pop(TARGETS, None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def executor() -> AsyncIterator[PythonExecutor]:
    executor = PythonExecutor(output_limit=4_000, kill_grace_seconds=1.0)
    try:
        yield executor
    finally:
        await executor.aclose()


async def test_sync_function_gets_args_and_kwargs(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    params = {"callable": f"{TARGETS}:describe", "args": ["a", 1], "kwargs": {"upper": True}}

    result = await executor.execute(context_for(params, timeout=5))

    assert result.status == "succeeded"
    assert result.result == {"return_value": {"text": "A-1", "pair": ["a", 1]}}


async def test_async_function_is_awaited_with_args_and_kwargs(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    params = {"callable": f"{TARGETS}:fetch", "args": [0.01, "v"], "kwargs": {"twice": True}}

    result = await executor.execute(context_for(params, timeout=5))

    assert result.status == "succeeded"
    assert result.result == {"return_value": ["v", "v"]}


async def test_stdlib_functions_and_dotted_attributes_resolve(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    added = await executor.execute(context_for({"callable": "operator:add", "args": [2, 3]}))
    slept = await executor.execute(context_for({"callable": "asyncio:sleep", "args": [0, "z"]}))
    nested = await executor.execute(
        context_for({"callable": f"{TARGETS}:Report.build", "args": ["q3"]})
    )

    assert added.result == {"return_value": 5}
    assert slept.result == {"return_value": "z"}
    assert nested.result == {"return_value": "report q3"}


async def test_exception_is_a_failure_with_its_traceback(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(
        context_for({"callable": f"{TARGETS}:explode", "args": ["no disk"]})
    )

    assert result.status == "failed"
    assert result.error == "ValueError: cannot do it: no disk"
    assert result.output is not None
    assert result.output.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"cannot do it: {reason}")' in result.output


async def test_exception_of_an_async_function_is_a_failure(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"callable": f"{TARGETS}:explode_later"}))

    assert result.status == "failed"
    assert result.error == "KeyError: 'missing'"
    assert "explode_later" in (result.output or "")


async def test_system_exit_is_a_failure_not_the_end_of_the_worker(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"callable": f"{TARGETS}:leave"}))

    assert result.status == "failed"
    assert result.error == "SystemExit: 4"


async def test_async_function_past_its_timeout_is_cancelled(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    started = time.monotonic()

    result = await executor.execute(context_for({"callable": f"{TARGETS}:hang"}, timeout=0.2))

    assert result.status == "timed_out"
    assert result.error == "timed out after 0.2 s"
    assert time.monotonic() - started < 1


async def test_sync_function_past_its_timeout_is_killed_without_waiting(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    await executor.warm_up()
    started = time.monotonic()

    result = await executor.execute(
        context_for({"callable": f"{TARGETS}:block", "args": [30.0]}, timeout=0.2)
    )

    assert result.status == "timed_out"
    assert time.monotonic() - started < 1.5


async def test_value_without_json_form_is_stored_as_its_repr(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"callable": f"{TARGETS}:opaque"}))

    assert result.status == "succeeded"
    assert result.result["return_value"].startswith("<object object at 0x")


async def test_unimportable_module_is_a_failure(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"callable": "no_such_module_9b2:run"}))

    assert result.status == "failed"
    assert result.error == (
        "cannot import 'no_such_module_9b2': ModuleNotFoundError: "
        "No module named 'no_such_module_9b2'"
    )


async def test_missing_function_is_a_failure(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"callable": f"{TARGETS}:absent"}))

    assert result.status == "failed"
    assert result.error == f"'{TARGETS}:absent' not found: no attribute 'absent'"


async def test_malformed_callable_is_refused(
    executor: PythonExecutor, context_for: ContextFactory
) -> None:
    result = await executor.execute(context_for({"callable": "os.system"}))

    assert result.status == "failed"
    assert (result.error or "").startswith("invalid parameters (params.callable):")
