"""``scheduler apply -f tasks.yaml`` and ``scheduler export``: your tasks as a file you keep in a
repository (YAML or JSON), applied as a precise diff."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Output, printable

_SIGNS = {"create": "+", "update": "~", "delete": "-", "unchanged": "="}


def read_tasks_file(source: str) -> dict[str, Any]:
    """The tasks file at ``source`` (``-``: stdin), YAML or JSON (JSON is YAML)."""
    label = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read {label}: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadInput(f"{label} is not valid YAML or JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadInput(f'{label} must hold an object with a "tasks" list')
    return document


def apply(
    ctx: typer.Context,
    file: Annotated[
        str, typer.Option("--file", "-f", help="The tasks file (YAML or JSON; - for stdin).")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the changes; make none.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Delete your tasks the file does not name (within scope)."),
    ] = False,
    prune_prefix: Annotated[
        str | None, typer.Option(help="Prune only tasks whose name starts with this.")
    ] = None,
    prune_label: Annotated[
        str | None, typer.Option(help="Prune only tasks carrying this label.")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Make your tasks exactly what a tasks file says: create, update, and with --prune delete.

    Example: scheduler apply -f tasks.yaml --dry-run, then scheduler apply -f tasks.yaml
    """
    out = Output(json_mode=json_output)
    document = read_tasks_file(file)
    with context_of(ctx).client() as api:
        answer = api.request(
            "POST",
            "/tasks/apply",
            json=document,
            params={
                "dry_run": str(dry_run).lower(),
                "prune": str(prune).lower(),
                "prune_prefix": prune_prefix,
                "prune_label": prune_label,
            },
        ).body
    out.show(answer, lambda: _render(out, answer))


def _render(out: Output, answer: dict[str, Any]) -> None:
    for change in answer["changes"]:
        if change["action"] == "unchanged":
            continue
        kind = change.get("kind", "task")
        what = change["name"] if kind == "task" else f"{kind} {change['name']}"
        out.line(f"{_SIGNS[change['action']]} {change['action']} {what}")
        for name, values in change["fields"].items():
            if change["action"] == "update":
                out.line(f"    {name}: {_value(values['before'])} -> {_value(values['after'])}")
    summary = answer["summary"]
    out.note(
        f"plan: {summary['create']} to create, {summary['update']} to update, "
        f"{summary['delete']} to delete, {summary['unchanged']} unchanged"
        if answer["dry_run"]
        else f"{summary['create']} created, {summary['update']} updated, "
        f"{summary['delete']} deleted, {summary['unchanged']} unchanged"
    )


def _value(value: Any) -> str:
    return printable(json.dumps(value, ensure_ascii=False, sort_keys=True))


def export(
    ctx: typer.Context,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="yaml or json.", case_sensitive=False)
    ] = "yaml",
    prefix: Annotated[str | None, typer.Option(help="Only names starting with this.")] = None,
    label: Annotated[str | None, typer.Option(help="Only tasks carrying this label.")] = None,
) -> None:
    """Write your tasks as a tasks file; `scheduler apply -f` of it changes nothing."""
    if output_format.lower() not in ("yaml", "json"):
        raise BadInput("--format must be yaml or json")
    with context_of(ctx).client() as api:
        document = api.get("/tasks/export", name_prefix=prefix, label=label)
    if output_format.lower() == "json":
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot write {output}: {error.strerror or error}") from None
