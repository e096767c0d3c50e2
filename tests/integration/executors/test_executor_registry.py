"""Executor lookup: built-ins, plugins from entry points (real EntryPoint objects loading a
real module), and the guard the worker calls every executor through."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint

import pytest

from scheduler_application.ports.executor import ExecutionContext, ExecutionResult
from scheduler_infrastructure.outbound.guarded import public_only
from scheduler_worker.executors import (
    ENTRY_POINT_GROUP,
    ExecutorRegistry,
    HttpExecutor,
    NoopExecutor,
    ShellExecutor,
    UnknownExecutorError,
    builtin_executors,
    run_executor,
)

pytestmark = pytest.mark.timeout(30)

ContextFactory = Callable[..., ExecutionContext]
PLUGINS = "scheduler_executor_test_plugins"
SOURCE = """
from scheduler_application.ports.executor import ExecutionResult


class FakeExecutor:
    name = "fake"

    async def execute(self, context):
        return ExecutionResult(status="succeeded", result={"seen": context.params})


def make_greeter():
    class Greeter:
        name = "greeter"

        async def execute(self, context):
            return ExecutionResult(status="succeeded", output="hello")

    return Greeter()


def broken_factory():
    raise RuntimeError("plugin misconfigured")


class ShellImpostor:
    name = "shell"

    async def execute(self, context):
        return ExecutionResult(status="succeeded")


class Nameless:
    async def execute(self, context):
        return ExecutionResult(status="succeeded")
"""


@pytest.fixture(scope="module", autouse=True)
def _plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("plugins")
    (folder / f"{PLUGINS}.py").write_text(textwrap.dedent(SOURCE))
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield
        sys.modules.pop(PLUGINS, None)


def _entry_point(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{PLUGINS}:{target}", group=ENTRY_POINT_GROUP)


async def test_builtins_are_registered_by_name() -> None:
    async with ExecutorRegistry.discover(
        builtins=builtin_executors(http_transport=public_only()), entry_points=[]
    ) as registry:
        assert registry.names == ("http", "noop", "python", "shell")
        assert isinstance(registry.get("shell"), ShellExecutor)
        assert isinstance(registry.get("http"), HttpExecutor)


async def test_unknown_executor_is_a_clear_error() -> None:
    registry = ExecutorRegistry([NoopExecutor()])

    with pytest.raises(
        UnknownExecutorError, match="unknown executor 'docker'; this worker has noop"
    ):
        registry.get("docker")


async def test_third_party_executor_is_found_through_its_entry_point(
    context_for: ContextFactory,
) -> None:
    entry_points = [_entry_point("fake", "FakeExecutor"), _entry_point("greeter", "make_greeter")]

    async with ExecutorRegistry.discover(
        builtins=builtin_executors(http_transport=public_only(), env_allowlist=["PATH"]),
        entry_points=entry_points,
    ) as registry:
        fake = registry.get("fake")
        result = await fake.execute(context_for({"anything": 1}))

        assert result == ExecutionResult(status="succeeded", result={"seen": {"anything": 1}})
        assert (await registry.get("greeter").execute(context_for({}))).output == "hello"
        assert "shell" in registry


async def test_broken_plugins_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    entry_points = [
        EntryPoint(name="ghost", value="no_such_plugin_pkg:Executor", group=ENTRY_POINT_GROUP),
        _entry_point("broken", "broken_factory"),
        _entry_point("shell", "ShellImpostor"),
        _entry_point("nameless", "Nameless"),
        _entry_point("fake", "FakeExecutor"),
    ]

    with caplog.at_level(logging.INFO, logger="scheduler_worker.executors.registry"):
        registry = ExecutorRegistry.discover(builtins=[NoopExecutor()], entry_points=entry_points)

    assert registry.names == ("fake", "noop")
    messages = [record.getMessage() for record in caplog.records]
    assert any("ghost" in message and "failed to load" in message for message in messages)
    assert any("broken" in message and "failed to load" in message for message in messages)
    assert any("belongs to a built-in executor" in message for message in messages)
    assert any("no string 'name'" in message for message in messages)


class _Crashing:
    name = "crashing"

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        raise ZeroDivisionError("bug in the executor")


class _Stubborn:
    """Ignores its timeout (the guard must stop it)."""

    name = "stubborn"

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        await asyncio.sleep(1000)
        return ExecutionResult(status="succeeded")


class _Confused:
    name = "confused"

    async def execute(self, context: ExecutionContext) -> ExecutionResult:
        return {"status": "succeeded"}  # type: ignore[return-value]


async def test_guard_turns_an_executor_exception_into_a_failure(
    context_for: ContextFactory,
) -> None:
    result = await run_executor(_Crashing(), context_for({}))

    assert result.status == "failed"
    assert result.error == "executor 'crashing' crashed: ZeroDivisionError: bug in the executor"


async def test_guard_times_out_an_executor_that_overruns(context_for: ContextFactory) -> None:
    result = await run_executor(_Stubborn(), context_for({}, timeout=0.1), grace_seconds=0.1)

    assert result.status == "timed_out"
    assert result.error is not None
    assert result.error.startswith("timed out after 0.1 s")


async def test_guard_rejects_a_result_of_the_wrong_type(context_for: ContextFactory) -> None:
    result = await run_executor(_Confused(), context_for({}))

    assert result.status == "failed"
    assert result.error == "executor 'confused' returned dict, not a result"


async def test_guard_passes_results_through_and_lets_cancellation_propagate(
    context_for: ContextFactory,
) -> None:
    assert await run_executor(NoopExecutor(), context_for({})) == ExecutionResult(
        status="succeeded"
    )
    running = asyncio.create_task(run_executor(_Stubborn(), context_for({})))
    await asyncio.sleep(0.01)
    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
