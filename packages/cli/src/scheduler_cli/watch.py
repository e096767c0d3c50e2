"""``runs wait``, ``runs follow`` and ``--wait``: watch a run to its end with live progress,
print how it ended, and exit with the outcome's code (see :mod:`scheduler_cli.waiting`)."""

from __future__ import annotations

from typing import Any, NoReturn

import typer

from scheduler_cli.client import ApiClient
from scheduler_cli.output import Output, when
from scheduler_cli.progress import RunProgress, outcome
from scheduler_cli.waiting import RunWatcher, exit_code, is_final

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
    """Print each status change as it is seen and each attempt's output when it ends; with
    --json one object per line: ``{"event": …}``, ``{"output": …}``, finally ``{"run": …}``."""
    seen: set[str] = set()
    watcher = RunWatcher(
        client=api, timeout=timeout, interval=interval, follow_retries=follow_retries
    )
    with RunProgress(out) as progress:

        def poll(current: Run) -> None:
            progress.show(current)
            for event in api.get(f"/runs/{current['id']}/events")["items"]:
                if event["id"] in seen:
                    continue
                seen.add(event["id"])
                if out.json_mode:
                    out.json_line({"event": event})
                else:
                    progress.emit(event_line(event))
            if is_final(current):
                _show_output(api, out, progress, current)

        final = watcher.wait(run, on_poll=poll)
    if out.json_mode:
        out.json_line({"run": final})
    else:
        out.line(outcome(final))
    raise typer.Exit(exit_code(final))


def event_line(event: Run) -> str:
    change = f"{event.get('from_status') or '·'} → {event['to_status']}"
    return f"{when(event['at'])}  run {event['run_id']}  {change:<24} {event['actor']}"


def _show_output(api: ApiClient, out: Output, progress: RunProgress, run: Run) -> None:
    text = api.get(f"/runs/{run['id']}/output").get("output")
    if out.json_mode:
        out.json_line({"output": text, "run_id": run["id"]})
    elif text:
        for line in text.rstrip("\n").split("\n"):
            progress.emit(f"  | {line}")
