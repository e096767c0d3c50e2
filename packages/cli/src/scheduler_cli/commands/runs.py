"""``scheduler runs …``: list, inspect, cancel, retry, read output and events, wait, follow."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from scheduler_cli import lookup, times
from scheduler_cli.client import ApiClient
from scheduler_cli.commands.options import (
    AllPages,
    FollowRetries,
    Interval,
    JsonFlag,
    Limit,
    Timeout,
)
from scheduler_cli.context import context_of
from scheduler_cli.errors import ApiError
from scheduler_cli.output import Column, Output, elapsed, printable, when
from scheduler_cli.watch import follow_and_report, wait_and_report

app = typer.Typer(
    help="Inspect and control runs; wait for one to end.",
    no_args_is_help=True,
)

RunArg = Annotated[str, typer.Argument(help="The run's id.", metavar="RUN")]
#: Looking up task names for a listing costs one request each; beyond this, ids are shown.
MAX_NAMES_LOOKED_UP = 25
EXIT_CODES_HELP = (
    "Exit code: 0 succeeded, 1 failed, timed_out, lost or dead_lettered, 2 cancelled, 124 when "
    "--timeout ran out first (and 1 when the server cannot be asked)."
)


def run_columns(names: dict[str, str]) -> list[Column]:
    return [
        ("ID", lambda r: r["id"]),
        ("TASK", lambda r: names.get(r["task_id"], r["task_id"])),
        ("STATUS", lambda r: r["status"]),
        ("TRIGGER", lambda r: r["trigger"]),
        ("ATTEMPT", lambda r: r["attempt"]),
        ("CREATED", lambda r: when(r["created_at"])),
        ("TOOK", lambda r: elapsed(r.get("started_at"), r.get("finished_at"))),
    ]


def task_names(api: ApiClient, task_ids: Iterable[str]) -> dict[str, str]:
    """Names for a listing, when there are few enough to look up."""
    unique = sorted(set(task_ids))
    if len(unique) > MAX_NAMES_LOOKED_UP:
        return {}
    names = {}
    for task_id in unique:
        with contextlib.suppress(ApiError):  # a deleted task's runs keep its id
            names[task_id] = str(api.get(f"/tasks/{task_id}")["name"])
    return names


@app.command("list")
def list_runs(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task name or id.")] = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help="Only runs in this status (repeatable)."),
    ] = None,
    trigger: Annotated[
        str | None, typer.Option(help="schedule, manual, dependency or retry.")
    ] = None,
    worker: Annotated[str | None, typer.Option(help="Worker name or id.")] = None,
    queue: Annotated[
        str | None,
        typer.Option(help="Only runs published to this queue (a worker's is worker.<id>)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Created after this time (2030-01-01T00:00:00Z) or span ago (2h)."),
    ] = None,
    limit: Limit = 20,
    all_pages: AllPages = False,
    json_output: JsonFlag = False,
) -> None:
    """List runs, newest first."""
    cli = context_of(ctx)
    out = Output(json_mode=json_output)
    with cli.client() as api:
        runs, more = api.page(
            "/runs",
            limit=None if all_pages else limit,
            task_id=lookup.task_id(api, task) if task else None,
            status=status or None,
            trigger=trigger,
            worker_id=lookup.worker_id(api, worker) if worker else None,
            queue=queue,
            created_after=times.since(since) if since else None,
        )
        names = {} if json_output else task_names(api, (r["task_id"] for r in runs))
    out.show(runs, lambda: out.table(runs, run_columns(names), empty="no runs"))
    out.more(len(runs), has_more=more)


@app.command("get")
def get_run(ctx: typer.Context, run: RunArg, json_output: JsonFlag = False) -> None:
    """Show one run."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        found = api.get(f"/runs/{run}")
        name = None if json_output else task_names(api, [found["task_id"]]).get(found["task_id"])
    out.show(found, lambda: out.record(run_record(found, name)))


def run_record(run: dict[str, Any], task_name: str | None = None) -> list[tuple[str, Any]]:
    task = f"{task_name} ({run['task_id']})" if task_name else run["task_id"]
    return [
        ("id", run["id"]),
        ("task", task),
        ("status", run["status"]),
        ("attempt", run["attempt"]),
        ("retry of", run.get("retry_of")),
        ("trigger", run["trigger"]),
        ("scheduled for", when(run.get("scheduled_for"))),
        ("queue", run.get("queue")),
        ("worker", run.get("worker_id")),
        ("created", when(run.get("created_at"))),
        ("queued", when(run.get("queued_at"))),
        ("started", when(run.get("started_at"))),
        ("finished", when(run.get("finished_at"))),
        ("took", elapsed(run.get("started_at"), run.get("finished_at"))),
        ("result", run.get("result")),
        ("error", run.get("error")),
        ("idempotency key", run.get("idempotency_key")),
        ("template", _template_of(run)),
        ("run params", _json_or_none(run.get("run_params"))),
        ("ran with params", _json_or_none(run.get("params"))),
    ]


def _template_of(run: dict[str, Any]) -> str | None:
    if not run.get("template_id"):
        return None
    return f"{run['template_id']} v{run.get('template_version')}"


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    run: RunArg,
    reason: Annotated[str | None, typer.Option(help="Recorded as the run's error.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Cancel a pending, queued or running run.

    A running worker learns of it at its next heartbeat and stops the run.
    """
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        cancelled = api.post(f"/runs/{run}/cancel", {"reason": reason} if reason else None)
    out.show(cancelled, lambda: out.line(f"run {cancelled['id']} is {cancelled['status']}"))


@app.command("retry")
def retry(
    ctx: typer.Context,
    run: RunArg,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the new attempt to end.")] = False,
    timeout: Timeout = None,
    interval: Interval = 1.0,
    json_output: JsonFlag = False,
) -> None:
    """Retry a failed, timed-out, lost, dead-lettered or cancelled run as a new attempt."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        attempt = api.post(f"/runs/{run}/retry")
        message = f"retrying run {run} as run {attempt['id']} (attempt {attempt['attempt']})"
        if wait:
            out.note(message)
            wait_and_report(api, out, attempt, timeout=timeout, interval=interval)
    out.show(attempt, lambda: out.line(message))


@app.command("output")
def output(ctx: typer.Context, run: RunArg, json_output: JsonFlag = False) -> None:
    """Print the output the worker captured (available once the run has ended)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        captured = api.get(f"/runs/{run}/output")
    if out.json_mode:
        out.json(captured)
        return
    if not captured.get("finished"):
        out.note(f"run {run} is still {captured['status']}; its output comes when it ends")
    text = captured.get("output")
    if text:
        if sys.stdout.isatty():  # a pipe or a file gets the bytes as the task wrote them
            text = printable(text, lines=True)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    elif captured.get("finished"):
        out.note(f"run {run} captured no output")


@app.command("events")
def events(ctx: typer.Context, run: RunArg, json_output: JsonFlag = False) -> None:
    """Show a run's audit trail: every status change, when and by whom."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        items = api.get(f"/runs/{run}/events")["items"]
    out.show(items, lambda: out.table(items, EVENT_COLUMNS, empty="no events"))


EVENT_COLUMNS: list[Column] = [
    ("AT", lambda e: when(e["at"])),
    ("FROM", lambda e: e.get("from_status")),
    ("TO", lambda e: e["to_status"]),
    ("ACTOR", lambda e: e["actor"]),
    ("DETAIL", lambda e: e.get("detail") or None),
]


@app.command("wait", epilog=EXIT_CODES_HELP)
def wait(
    ctx: typer.Context,
    run: RunArg,
    timeout: Timeout = None,
    interval: Interval = 1.0,
    follow_retries: FollowRetries = True,
    json_output: JsonFlag = False,
) -> None:
    """Wait for a run to end, showing its progress; the exit code says how it ended."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        wait_and_report(
            api, out, run, timeout=timeout, interval=interval, follow_retries=follow_retries
        )


@app.command("follow", epilog=EXIT_CODES_HELP)
def follow(
    ctx: typer.Context,
    run: RunArg,
    timeout: Timeout = None,
    interval: Interval = 1.0,
    follow_retries: FollowRetries = True,
    json_output: JsonFlag = False,
) -> None:
    """Follow a run live: each status change as it happens (the server's event stream), then
    its output; an automatic retry is followed too.

    With --json, one JSON object per line: {"event": …} for each change, {"output": …} and
    finally {"run": …}.
    """
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        follow_and_report(
            api, out, run, timeout=timeout, interval=interval, follow_retries=follow_retries
        )
