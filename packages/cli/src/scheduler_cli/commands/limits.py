"""``scheduler limits …``: named shared limits and their current use (operators and admins set
and delete them); ``scheduler circuits``: the circuit breakers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.output import Column, Output, when

app = typer.Typer(
    help="Named shared limits (no subcommand: list them with their use); set, show, delete.",
    invoke_without_command=True,
)
circuits_app = typer.Typer(
    help="Circuit breakers: state, failures, when an open one probes again.",
    invoke_without_command=True,
)

LimitArg = Annotated[str, typer.Argument(help="The limit's name.", metavar="NAME")]


def _rates(limit: Mapping[str, Any]) -> str:
    parts = []
    if limit.get("rate"):
        parts.append(f"{limit['rate']} in all")
    if limit.get("partition_rate"):
        parts.append(f"{limit['partition_rate']} per {limit['partition_by']}")
    if limit.get("max_concurrency") is not None:
        parts.append(f"max {limit['max_concurrency']} in flight")
    return ", ".join(parts) or "-"


LIMIT_COLUMNS: list[Column] = [
    ("LIMIT", lambda x: x["name"]),
    ("RATES", _rates),
    ("IN FLIGHT", lambda x: x["use"]["in_flight"]),
    ("TOKENS", lambda x: "-" if x["use"]["tokens"] is None else f"{x['use']['tokens']:g}"),
    ("TASKS", lambda x: x["use"]["tasks"]),
    ("QUEUES", lambda x: ",".join(x["use"]["queues"]) or "-"),
    ("CIRCUIT", lambda x: x["circuit"]),
]
CIRCUIT_COLUMNS: list[Column] = [
    ("CIRCUIT", lambda c: c["name"]),
    ("STATE", lambda c: c["state"]),
    ("FAILURES", lambda c: f"{c['failures']}/{c['failure_threshold']}"),
    ("REOPENS", lambda c: when(c["reopens_at"]) if c.get("reopens_at") else "-"),
    ("PROBE", lambda c: c.get("probe_run_id") or "-"),
    ("HELD", lambda c: str(c.get("held_runs", 0))),
]


@app.callback()
def limits(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Every named limit: its rates, runs in flight, tokens left in its global bucket, how many
    tasks and which queues reference it, its circuit."""
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        answer = api.get("/limits")
    out.show(answer, lambda: out.table(answer["items"], LIMIT_COLUMNS, empty="no limits"))


def _show_one(out: Output, limit: dict[str, Any], verb: str) -> None:
    def text() -> None:
        use = limit["use"]
        out.line(f"limit {limit['name']} {verb}: {_rates(limit)}; circuit {limit['circuit']}")
        out.line(f"in flight {use['in_flight']}, tokens {use['tokens']}")
        for partition, count in sorted(use["in_flight_by_partition"].items()):
            tokens = use["tokens_by_partition"].get(partition)
            out.line(f"  {partition}: {count} in flight, tokens {tokens}")

    out.show(limit, text)


@app.command("show")
def show(ctx: typer.Context, name: LimitArg, json_output: JsonFlag = False) -> None:
    """One limit and its current use, per partition."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        _show_one(out, api.get(f"/limits/{name}"), "is")


@app.command("set")
def set_limit(
    ctx: typer.Context,
    name: LimitArg,
    rate: Annotated[str | None, typer.Option(help="All its runs together: 100/s.")] = None,
    partition_by: Annotated[
        str | None, typer.Option(help="owner or task: each gets --partition-rate.")
    ] = None,
    partition_rate: Annotated[str | None, typer.Option(help="Each partition's: 5/m.")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Runs queued or running at once.")
    ] = None,
    failure_threshold: Annotated[
        int | None, typer.Option(help="Failed runs in a row that open its circuit.")
    ] = None,
    cool_down_seconds: Annotated[
        float | None, typer.Option(help="How long its open circuit waits before a probe.")
    ] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    json_output: JsonFlag = False,
) -> None:
    """Create or replace a limit (the whole limit: options left out are cleared)."""
    body = {
        "description": description,
        "rate": rate,
        "partition_by": partition_by,
        "partition_rate": partition_rate,
        "max_concurrency": max_concurrency,
        "failure_threshold": failure_threshold,
        "cool_down_seconds": cool_down_seconds,
    }
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        _show_one(out, api.put(f"/limits/{name}", body), "set")


@app.command("delete")
def delete(ctx: typer.Context, name: LimitArg) -> None:
    """Delete a limit; refused while a task, queue or template still names it (the answer
    lists them)."""
    with context_of(ctx).client() as api:
        api.delete(f"/limits/{name}")
    Output(json_mode=False).line(f"limit {name} deleted")


@circuits_app.callback()
def circuits(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Every circuit that has counted a failure."""
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        answer = api.get("/circuits")
    out.show(answer, lambda: out.table(answer["items"], CIRCUIT_COLUMNS, empty="no circuits"))
