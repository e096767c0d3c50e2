"""Live progress while a command waits for a run: a spinner line on a terminal, and a plain
line per change otherwise (on stderr, so stdout keeps only the result)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.text import Text

from scheduler_cli.output import Output, duration, elapsed, when

Run = dict[str, Any]


def describe(run: Run, *, brief: bool = False) -> str:
    """``run 01a2… (attempt 2): running on worker 01a3…``; ``brief`` shortens the ids to fit a
    spinner line (their tails: the heads of UUIDv7s made close together are alike)."""
    status = str(run.get("status"))
    text = f"run {_id(run.get('id'), brief)}"
    if (run.get("attempt") or 1) > 1:
        text += f" (attempt {run['attempt']})"
    text += f": {status}"
    if status == "running" and run.get("worker_id"):
        text += f" on worker {_id(run['worker_id'], brief)}"
    if status == "pending" and run.get("not_before"):
        text += f" until {when(run['not_before'])}"
    return text


def _id(value: object, brief: bool) -> str:
    text = str(value)
    return f"…{text[-12:]}" if brief and len(text) > 13 else text


def outcome(run: Run) -> str:
    """The one line a finished run is summed up in."""
    text = describe(run)
    took = elapsed(run.get("started_at"), run.get("finished_at"))
    if took:
        text += f" in {took}"
    exit_status = (run.get("result") or {}).get("exit_code")
    if exit_status is not None:
        text += f" (exit code {exit_status})"
    error = run.get("error")
    if error and run.get("status") != "succeeded" and str(error) not in text:
        text += f": {error}"
    return text


class RunProgress:
    """Use as a context manager around the wait; call ``show`` with each state fetched and
    ``emit`` for lines that belong to the result (``runs follow`` prints events with it)."""

    def __init__(self, out: Output) -> None:
        self._out = out
        # The spinner shares a console with the result lines when they go to the same terminal,
        # so rich can print them above it; JSON on a terminal gets no spinner at all.
        self._console: Console | None = None
        if not out.json_mode and out.stdout.is_terminal:
            self._console = out.stdout
        elif not out.stdout.is_terminal and out.stderr.is_terminal:
            self._console = out.stderr
        self._status: Status | None = None
        self._last: str | None = None
        self._started = time.monotonic()

    def __enter__(self) -> RunProgress:
        if self._console is not None:
            self._status = self._console.status("waiting…", spinner="dots")
            self._status.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def show(self, run: Run) -> None:
        text = describe(run)
        if self._status is not None:
            waited = duration(time.monotonic() - self._started)
            line = f"{describe(run, brief=True)}  [{waited}]"
            self._status.update(Text(line, no_wrap=True, overflow="ellipsis"))
        elif text != self._last:
            self._out.note(f"{when_now()}  {text}")
        self._last = text

    def emit(self, line: str) -> None:
        """A result line on stdout (above the spinner when that is on stdout too)."""
        self._out.stdout.print(Text(line), soft_wrap=True)


def when_now() -> str:
    return time.strftime("%H:%M:%S")
