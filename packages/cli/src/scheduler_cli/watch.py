"""``runs wait``, ``runs follow``, ``tasks watch`` and ``--wait``: watch a run to its end with live
progress, print how it ended, and exit with the outcome's code (see :mod:`scheduler_cli.waiting`);
``follow`` and ``watch`` read the server's event stream (``GET /api/v1/events``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from scheduler_cli.client import ApiClient
from scheduler_cli.errors import CliError
from scheduler_cli.output import Output, printable, when
from scheduler_cli.progress import RunProgress, outcome
from scheduler_cli.waiting import RunWatcher, WaitTimedOut, exit_code, is_final

Run = dict[str, Any]


def wait_and_report(
    api: ApiClient,
    out: Output,
    run: Run | str,
    *,
    timeout: float | None,
    interval: float,
    follow_retries: bool = True,
) -> NoReturn:
    """Wait with a status line, then print the outcome (the run as JSON, or one line)."""
    watcher = RunWatcher(
        client=api, timeout=timeout, interval=interval, follow_retries=follow_retries
    )
    with RunProgress(out) as progress:
        final = watcher.wait(run, on_poll=progress.show)
    out.show(final, lambda: out.line(outcome(final)))
    raise typer.Exit(exit_code(final))


def follow_and_report(
    api: ApiClient,
    out: Output,
    run: Run | str,
    *,
    timeout: float | None,
    interval: float,
    follow_retries: bool = True,
) -> NoReturn:
    """Print each status change as it happens (from the event stream, ``GET /events``) and
    each attempt's output when it ends; with --json one object per line: ``{"event": …}``,
    ``{"output": …}``, finally ``{"run": …}``. ``interval`` is only the retry lookup's."""
    watcher = RunWatcher(
        client=api, timeout=timeout, interval=interval, follow_retries=follow_retries
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    current: Run = api.get(f"/runs/{run}") if isinstance(run, str) else run
    seen: set[str] = set()
    with RunProgress(out) as progress:

        def show(event: Run) -> None:
            if event["id"] in seen:
                return
            seen.add(event["id"])
            if out.json_mode:
                out.json_line({"event": event})
            else:
                progress.emit(event_line(event))

        while True:
            progress.show(current)
            if is_final(current):  # ended already: its history, however old
                for event in api.get(f"/runs/{current['id']}/events")["items"]:
                    show(event)
            else:
                current = _stream_to_end(api, current, show, progress, deadline, timeout)
            _show_output(api, out, progress, current)
            retry = watcher.retry_of(current) if follow_retries else None
            if retry is None:
                break
            current = retry
    if out.json_mode:
        out.json_line({"run": current})
    else:
        out.line(outcome(current))
    raise typer.Exit(exit_code(current))


def _stream_to_end(
    api: ApiClient,
    run: Run,
    show: Callable[[Run], None],
    progress: RunProgress,
    deadline: float | None,
    timeout: float | None,
) -> Run:
    """Follow one attempt's events from its first until the one that ends it; the run as it
    ended."""

    def remaining() -> float | None:
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    stream = api.events({"run_id": run["id"], "after": "0-0"}, idle_timeout=remaining)
    try:
        for event in stream:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(run, timeout or 0.0)
            if event is None:
                continue
            show(event)
            run = {**run, "status": event["to_status"]}
            progress.show(run)
            if is_final(run):
                fresh: Run = api.get(f"/runs/{run['id']}")
                if fresh["status"] == event["to_status"]:
                    return fresh
    except TimeoutError:
        raise WaitTimedOut(run, timeout or 0.0) from None
    finally:
        stream.close()
    raise CliError(f"the event stream of run {run['id']} ended early")


def watch_task(
    api: ApiClient,
    out: Output,
    task_id: str,
    *,
    kinds: list[str],
    from_start: bool,
    timeout: float | None,
) -> None:
    """Print the task's events as they happen (its runs' transitions, its changes, skipped
    slots) until interrupted or ``timeout`` seconds pass; with --json one object per line."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float | None:
        return None if deadline is None else max(0.001, deadline - time.monotonic())

    params: dict[str, Any] = {"task_id": task_id, "type": kinds}
    if from_start:
        params["after"] = "0-0"
    stream = api.events(params, idle_timeout=remaining)
    try:
        for event in stream:
            if event is not None:
                if out.json_mode:
                    out.json_line(event)
                else:
                    out.line(task_event_line(event))
            if deadline is not None and time.monotonic() >= deadline:
                return
    except TimeoutError:
        return
    finally:
        stream.close()


def event_line(event: Run) -> str:
    change = f"{event.get('from_status') or '·'} → {event['to_status']}"
    return printable(f"{when(event['at'])}  run {event['run_id']}  {change:<24} {event['actor']}")


def task_event_line(event: Run) -> str:
    """One line per event of a task: when, what, on which run, who, and why."""
    parts = [str(when(event["at"])), f"{event['kind']:<18}"]
    if event.get("run_id"):
        change = f"{event.get('from_status') or '·'} → {event.get('to_status')}"
        parts.append(f"run {event['run_id']}  {change}")
    parts.append(str(event["actor"]))
    detail = event.get("detail") or {}
    if event["kind"] == "task.slot_skipped":
        parts.append(f"slot {detail.get('slot')} skipped: {detail.get('reason')}")
    elif detail.get("changed"):
        parts.append("changed " + ", ".join(map(str, detail["changed"])))
    return printable("  ".join(parts))


def _show_output(api: ApiClient, out: Output, progress: RunProgress, run: Run) -> None:
    text = api.get(f"/runs/{run['id']}/output").get("output")
    if out.json_mode:
        out.json_line({"output": text, "run_id": run["id"]})
    elif text:
        for line in text.rstrip("\n").split("\n"):
            progress.emit(f"  | {line}")
