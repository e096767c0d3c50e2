"""The loop each process runs: uvloop, workers included (their sandbox starts tasks with
``subprocess.Popen``, not the loop's ``subprocess_exec``: tests/integration/executors/
test_sandbox_on_uvloop.py), unless the standard loop is chosen."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from scheduler_infrastructure.event_loop import (
    VARIABLE,
    EventLoopChoiceError,
    loop_factory,
    run,
)
from scheduler_infrastructure.heap import VARIABLE as GC_VARIABLE
from scheduler_infrastructure.startup import StartupError


@pytest.fixture(autouse=True)
def _collector_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` here runs in the test process: its collector is not to be frozen (that is
    tests/unit/infrastructure/test_heap.py's, in processes of their own)."""
    monkeypatch.setenv(GC_VARIABLE, "default")


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_by_default_a_process_runs_on_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    assert run(_loop_type()) is uvloop.Loop


def test_the_standard_loop_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, " AsyncIO ")
    assert loop_factory() is None
    assert run(_loop_type()) is not uvloop.Loop


def test_an_unknown_choice_is_a_startup_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, "trio")
    coroutine = _loop_type()
    with pytest.raises(StartupError, match=f"{VARIABLE}='trio'"):
        run(coroutine)
    # Closed, not left to warn "never awaited".
    assert coroutine.cr_frame is None


def test_insisting_on_uvloop_without_it_installed_fails_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    with pytest.raises(EventLoopChoiceError, match="not installed"):
        loop_factory("uvloop")
    assert loop_factory("auto") is None
