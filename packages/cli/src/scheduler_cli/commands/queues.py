"""``scheduler queues …``: how deep each queue is and how fast it moves; pause, resume, purge
and limit one (operators and admins)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Column, Output, when

app = typer.Typer(
    help="Queue depths and throughput (no subcommand: list them); pause, resume, purge, limit.",
    invoke_without_command=True,
)

QueueArg = Annotated[str, typer.Argument(help="The queue's name.", metavar="NAME")]


def _limits(q: Mapping[str, Any]) -> str:
    parts = []
    if q.get("effective_rate_limit"):
        source = " (config)" if q.get("rate_limit_source") == "config" else ""
        parts.append(f"rate {q['effective_rate_limit']}{source}")
    if q.get("max_concurrency") is not None:
        parts.append(f"max {q['max_concurrency']}")
    if q.get("fairness") == "fair":
        parts.append(f"fair ({q.get('fair_in_flight')} per key)")
    if q.get("limits"):
        parts.append("limits " + ",".join(q["limits"]))
    return ", ".join(parts) or "-"


QUEUE_COLUMNS: list[Column] = [
    ("QUEUE", lambda q: q["name"]),
    ("STATE", lambda q: "paused" if q.get("paused") else "active"),
    ("DEPTH", lambda q: q.get("depth")),
    ("PENDING", lambda q: q["pending"]),
    ("QUEUED", lambda q: q["queued"]),
    ("RUNNING", lambda q: q["running"]),
    ("CREATED/MIN", lambda q: f"{q['created_per_minute']:g}"),
    ("FINISHED/MIN", lambda q: f"{q['finished_per_minute']:g}"),
    ("LIMITS", _limits),
]


@app.callback()
def queues(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Show every queue's state, depth, throughput and limits.

    DEPTH is the broker's count (- when it does not say); PENDING, QUEUED and RUNNING are runs
    now, and the rates cover the last minute. LIMITS: the rate limit in force ("(config)" when
    it is the configured default) and the max concurrency.
    """
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        answer = api.get("/queues")
    items = answer["items"]
    out.show(answer, lambda: out.table(items, QUEUE_COLUMNS, empty="no queues"))


def _show_one(out: Output, queue: dict[str, Any], verb: str) -> None:
    def text() -> None:
        state = "paused" if queue["paused"] else "active"
        out.line(f"queue {queue['name']} {verb}: {state}, limits: {_limits(queue)}")
        if queue.get("updated_by"):
            out.line(f"last changed by {queue['updated_by']} {when(queue['updated_at'])}")

    out.show(queue, text)


@app.command("show")
def show(ctx: typer.Context, name: QueueArg, json_output: JsonFlag = False) -> None:
    """One queue: its depth, state and limits, and who changed them last."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        queue = api.get(f"/queues/{name}")
    _show_one(out, queue, "is")


@app.command("pause")
def pause(ctx: typer.Context, name: QueueArg, json_output: JsonFlag = False) -> None:
    """Pause a queue: its runs wait (nothing is lost) until it is resumed; running ones finish."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        queue = api.post(f"/queues/{name}/pause")
    _show_one(out, queue, "paused")


@app.command("resume")
def resume(ctx: typer.Context, name: QueueArg, json_output: JsonFlag = False) -> None:
    """Resume a paused queue: its waiting runs go out again, in their usual order."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        queue = api.post(f"/queues/{name}/resume")
    _show_one(out, queue, "resumed")


@app.command("purge")
def purge(
    ctx: typer.Context,
    name: QueueArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Cancel every pending and queued run of a queue (running ones are left alone)."""
    out = Output(json_mode=json_output)
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput("purging needs --yes when stdin is not a terminal")
        typer.confirm(f"Cancel every pending and queued run of queue {name}?", abort=True)
    with context_of(ctx).client() as api:
        answer = api.post(f"/queues/{name}/purge")
    out.show(
        answer, lambda: out.line(f"queue {name} purged: {answer['cancelled']} run(s) cancelled")
    )


@app.command("set")
def set_limits(
    ctx: typer.Context,
    name: QueueArg,
    rate_limit: Annotated[
        str | None,
        typer.Option("--rate-limit", help="At most this many runs per period: 10/s, 5/10s, 100/m."),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option("--max-concurrency", help="Runs queued or running at once, fleet-wide."),
    ] = None,
    clear_rate_limit: Annotated[
        bool,
        typer.Option(
            "--clear-rate-limit", help="Remove the queue's rate limit (a configured one applies)."
        ),
    ] = False,
    clear_max_concurrency: Annotated[
        bool, typer.Option("--clear-max-concurrency", help="Remove the concurrency cap.")
    ] = False,
    fairness: Annotated[
        str | None,
        typer.Option("--fairness", help="fifo, or fair: round-robin across owners."),
    ] = None,
    fair_in_flight: Annotated[
        int | None,
        typer.Option("--fair-in-flight", help="Under fair: runs per owner in flight at once."),
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="A named shared limit every run draws on (repeatable)."),
    ] = None,
    clear_limits: Annotated[
        bool, typer.Option("--clear-limits", help="Remove the queue's named limits.")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Set or clear a queue's rate limit, max concurrency, fairness and named limits
    (operators and admins)."""
    body: dict[str, Any] = {}
    if rate_limit is not None and clear_rate_limit:
        raise BadInput("--rate-limit and --clear-rate-limit exclude each other")
    if max_concurrency is not None and clear_max_concurrency:
        raise BadInput("--max-concurrency and --clear-max-concurrency exclude each other")
    if rate_limit is not None or clear_rate_limit:
        body["rate_limit"] = rate_limit
    if max_concurrency is not None or clear_max_concurrency:
        body["max_concurrency"] = max_concurrency
    if fairness is not None:
        body["fairness"] = fairness
    if fair_in_flight is not None:
        body["fair_in_flight"] = fair_in_flight
    if limit and clear_limits:
        raise BadInput("--limit and --clear-limits exclude each other")
    if limit or clear_limits:
        body["limits"] = list(limit or [])
    if not body:
        raise BadInput(
            "nothing to set: give --rate-limit, --max-concurrency, --fairness, --fair-in-flight, "
            "--limit or a --clear-… option"
        )
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        queue = api.patch(f"/queues/{name}", body)
    _show_one(out, queue, "set")
