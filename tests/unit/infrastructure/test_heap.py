"""The collector set for a server (``scheduler_infrastructure.heap``), in processes of their own:
freezing is for a whole process, and this one runs other tests."""

from __future__ import annotations

import ast
import gc
import os
import subprocess
import sys

import pytest

from scheduler_infrastructure.event_loop import run
from scheduler_infrastructure.heap import VARIABLE, YOUNG_THRESHOLD, HeapChoiceError, settle
from scheduler_infrastructure.startup import StartupError

pytestmark = pytest.mark.timeout(60)

_REPORT = "import gc; print((gc.get_freeze_count(), gc.get_threshold()))"


def _in_a_process(code: str, **env: str) -> tuple[int, tuple[int, int, int]]:
    environ = {k: v for k, v in os.environ.items() if k != VARIABLE} | env
    answer = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    value: tuple[int, tuple[int, int, int]] = ast.literal_eval(answer.stdout.strip())
    return value


def test_settling_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    before = _in_a_process(_REPORT)
    assert before[0] == 0
    frozen, threshold = _in_a_process(
        "from scheduler_infrastructure.heap import settle; assert settle(); " + _REPORT
    )
    assert frozen > 10_000  # the interpreter's and the package's objects at least
    assert threshold[0] == YOUNG_THRESHOLD
    assert threshold[1:] == before[1][1:]


def test_every_process_s_loop_starts_on_a_settled_heap() -> None:
    code = (
        "import gc\n"
        "from scheduler_infrastructure.event_loop import run\n"
        "async def main():\n"
        "    return gc.get_freeze_count(), gc.get_threshold()\n"
        "print(run(main()))\n"
    )
    frozen, threshold = _in_a_process(code)
    assert frozen > 10_000
    assert threshold[0] == YOUNG_THRESHOLD


def test_default_leaves_the_collector_as_cpython_sets_it() -> None:
    code = "from scheduler_infrastructure.heap import settle; assert not settle(); " + _REPORT
    frozen, threshold = _in_a_process(code, **{VARIABLE: " Default "})
    assert frozen == 0
    assert threshold[0] != YOUNG_THRESHOLD


def test_an_unknown_setting_is_a_startup_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = gc.get_freeze_count()
    with pytest.raises(HeapChoiceError, match=f"{VARIABLE}='off'"):
        settle({VARIABLE: "off"})
    monkeypatch.setenv(VARIABLE, "off")

    async def main() -> None:
        raise AssertionError("never started")

    coroutine = main()
    with pytest.raises(StartupError, match=VARIABLE):
        run(coroutine)
    assert coroutine.cr_frame is None  # closed, not left to warn "never awaited"
    assert gc.get_freeze_count() == frozen
