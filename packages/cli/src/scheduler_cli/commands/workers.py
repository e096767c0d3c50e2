"""``scheduler workers …``: see the workers, drain one and undrain it."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler_cli import lookup
from scheduler_cli.commands.options import AllPages, JsonFlag, Limit
from scheduler_cli.context import context_of
from scheduler_cli.output import Column, Output, when

app = typer.Typer(
    help="See the workers; drain one (it stops taking runs) and undrain it.", no_args_is_help=True
)

WORKER_COLUMNS: list[Column] = [
    ("NAME", lambda w: w["name"]),
    ("ID", lambda w: w["id"]),
    ("STATUS", lambda w: w["status"]),
    ("QUEUES", lambda w: w["queues"]),
    ("RUNS", lambda w: f"{w['active_runs']}/{w['capacity']}"),
    ("HOST", lambda w: f"{w['hostname']}:{w['pid']}"),
    ("HEARTBEAT", lambda w: when(w["heartbeat_at"])),
    ("VERSION", lambda w: w.get("version") or None),
]


@app.command("list")
def list_workers(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="Only workers that are online, draining or offline.")
    ] = None,
    limit: Limit = 50,
    all_pages: AllPages = False,
    json_output: JsonFlag = False,
) -> None:
    """List workers by name."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        workers, more = api.page("/workers", limit=None if all_pages else limit, status=status)
    out.show(workers, lambda: out.table(workers, WORKER_COLUMNS, empty="no workers"))
    out.more(len(workers), has_more=more)


@app.command("drain")
def drain(
    ctx: typer.Context,
    worker: Annotated[str, typer.Argument(help="The worker's name or id.", metavar="WORKER")],
    json_output: JsonFlag = False,
) -> None:
    """Stop a worker taking new runs; it finishes the runs it holds and stays registered as
    draining until undrained (operators and admins). A name means the live worker of that name."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        drained = api.post(f"/workers/{lookup.worker_id(api, worker)}/drain")
    out.show(
        drained,
        lambda: out.line(
            f"worker {drained['name']} is {drained['status']} "
            f"({drained['active_runs']} run(s) still in hand)"
        ),
    )


@app.command("undrain")
def undrain(
    ctx: typer.Context,
    worker: Annotated[str, typer.Argument(help="The worker's name or id.", metavar="WORKER")],
    json_output: JsonFlag = False,
) -> None:
    """Let a drained worker take runs again (operators and admins)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        undrained = api.post(f"/workers/{lookup.worker_id(api, worker)}/undrain")
    out.show(undrained, lambda: out.line(f"worker {undrained['name']} is {undrained['status']}"))
