"""``scheduler templates …``: task types (admins and operators define them) and subscriptions
to them (your task made from a template, with your parameters; docs/templates.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from scheduler_cli import lookup
from scheduler_cli.commands.options import JsonFlag, Limit
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Column, Output, when
from scheduler_cli.param_input import ParamOption, ParamsOption, parse_params

app = typer.Typer(
    help=(
        "Templates (task types): admins and operators define them; users subscribe with "
        "their own parameters (docs/templates.md)."
    ),
    no_args_is_help=True,
)

TEMPLATE_COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("VERSION", lambda t: t["version"]),
    ("EXECUTOR", lambda t: t["executor"]),
    ("MIN INTERVAL", lambda t: t["schedule_bounds"]["min_interval_seconds"] or "-"),
    ("ID", lambda t: t["id"]),
    ("DESCRIPTION", lambda t: t["description"]),
]
SUBSCRIPTION_COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("OWNER", lambda t: t["owner_id"]),
    ("VERSION", lambda t: t.get("template_version")),
    ("PARAMS", lambda t: json.dumps(t.get("template_params") or {}, sort_keys=True)),
    ("PAUSED", lambda t: "yes" if t["paused"] else "no"),
    ("ID", lambda t: t["id"]),
]
TemplateRef = Annotated[str, typer.Argument(help="The template's name or id.", metavar="TEMPLATE")]
FileOption = Annotated[
    str,
    typer.Option("--file", "-f", help="A YAML or JSON file (- for stdin)."),
]


def read_document(source: str) -> Any:
    label = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read {label}: {error.strerror or error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadInput(f"{label} is not valid YAML or JSON: {error}") from None


def _record(out: Output, template: dict[str, Any]) -> None:
    out.record(
        [
            ("id", template["id"]),
            ("name", template["name"]),
            ("version", template["version"]),
            ("executor", template["executor"]),
            ("params", json.dumps(template["params"], sort_keys=True)),
            ("params schema", json.dumps(template["params_schema"], sort_keys=True)),
            ("schedule", json.dumps(template["schedule"]) if template["schedule"] else "-"),
            ("schedule bounds", json.dumps(template["schedule_bounds"], sort_keys=True)),
            ("policies", json.dumps(template["policies"], sort_keys=True)),
            ("updated", when(template["updated_at"])),
            ("description", template["description"]),
        ]
    )


def _ref(ref: str) -> str:
    return ref.lower() if lookup.is_id(ref) else ref


@app.command("list")
def list_templates(ctx: typer.Context, limit: Limit = 50, json_output: JsonFlag = False) -> None:
    """List the templates."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        items = api.get("/templates", limit=limit)["items"]
    out.show(items, lambda: out.table(items, TEMPLATE_COLUMNS, empty="no templates"))


@app.command("get")
def get(ctx: typer.Context, template: TemplateRef, json_output: JsonFlag = False) -> None:
    """Show a template."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        found = api.get(f"/templates/{_ref(template)}")
    out.show(found, lambda: _record(out, found))


@app.command("create")
def create(ctx: typer.Context, file: FileOption, json_output: JsonFlag = False) -> None:
    """Create a template from a file (admin, operator).

    Example: scheduler templates create -f weather.yaml
    """
    out = Output(json_mode=json_output)
    document = read_document(file)
    with context_of(ctx).client() as api:
        created = api.post("/templates", document)
    out.show(created, lambda: _record(out, created))


@app.command("update")
def update(
    ctx: typer.Context, template: TemplateRef, file: FileOption, json_output: JsonFlag = False
) -> None:
    """Change a template from a file of the fields to change (admin, operator); every
    subscription follows in the same transaction, keeping its own parameters."""
    out = Output(json_mode=json_output)
    document = read_document(file)
    with context_of(ctx).client() as api:
        changed = api.patch(f"/templates/{_ref(template)}", document)
    out.show(changed, lambda: _record(out, changed))


@app.command("delete")
def delete(ctx: typer.Context, template: TemplateRef, json_output: JsonFlag = False) -> None:
    """Delete a template without subscriptions (admin, operator)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        api.delete(f"/templates/{_ref(template)}")
    out.show({"deleted": template}, lambda: out.line(f"deleted template {template}"))


@app.command("subscribe")
def subscribe(
    ctx: typer.Context,
    template: TemplateRef,
    param: ParamOption = None,
    params: ParamsOption = None,
    name: Annotated[
        str | None, typer.Option(help="Your task's name (default: the template's).")
    ] = None,
    every: Annotated[
        int | None, typer.Option(help="Your own schedule: every N seconds.", min=1)
    ] = None,
    cron: Annotated[str | None, typer.Option(help="Your own schedule: a cron expression.")] = None,
    timezone: Annotated[str, typer.Option(help="The cron expression's time zone.")] = "UTC",
    owner: Annotated[
        str | None, typer.Option(help="Subscribe this user instead (admin, operator).")
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help='Many subscriptions at once (admin, operator): a YAML/JSON list of {"owner", '
            '"params", "name", "schedule"} (or {"subscriptions": [...]}); - for stdin.',
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Subscribe to a template: your task, with your parameters.

    Example: scheduler templates subscribe weather -p city=Oslo --every 900
    """
    out = Output(json_mode=json_output)
    if file is not None:
        _subscribe_many(ctx, out, template, file)
        return
    if every is not None and cron is not None:
        raise BadInput("give --every or --cron, not both")
    body: dict[str, Any] = {"params": parse_params(param, params) or {}}
    if name is not None:
        body["name"] = name
    if owner is not None:
        body["owner"] = owner
    if every is not None:
        body["schedule"] = {"interval_seconds": every}
    if cron is not None:
        body["schedule"] = {"cron": cron, "timezone": timezone}
    with context_of(ctx).client() as api:
        task = api.post(f"/templates/{_ref(template)}/subscriptions", body)
    out.show(task, lambda: out.line(f"subscribed: task {task['name']} ({task['id']})"))


def _subscribe_many(ctx: typer.Context, out: Output, template: str, file: str) -> None:
    document = read_document(file)
    if isinstance(document, dict) and isinstance(document.get("subscriptions"), list):
        document = document["subscriptions"]
    if not isinstance(document, list):
        raise BadInput(f'{file} must hold a list of subscriptions (or {{"subscriptions": [...]}})')
    with context_of(ctx).client() as api:
        answer = api.post(
            f"/templates/{_ref(template)}/subscriptions/bulk", {"subscriptions": document}
        )

    def render() -> None:
        out.line(f"{answer['created']} created, {answer['refused']} refused")
        for result in answer["results"]:
            error = result.get("error")
            if error:
                out.line(f"  #{result['index']}: {error['field']}: {error['detail']}")

    out.show(answer, render)
    if answer["refused"]:
        raise typer.Exit(1)


@app.command("subscriptions")
def subscriptions(
    ctx: typer.Context, template: TemplateRef, limit: Limit = 50, json_output: JsonFlag = False
) -> None:
    """The template's subscriptions (yours; admin, operator: everyone's)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        items = api.get(f"/templates/{_ref(template)}/subscriptions", limit=limit)["items"]
    out.show(items, lambda: out.table(items, SUBSCRIPTION_COLUMNS, empty="no subscriptions"))


@app.command("set-params")
def set_params(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="Your subscription (task name or id).")],
    param: ParamOption = None,
    params: ParamsOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Change a subscription's parameters (merged over its own; --param KEY=null removes one)."""
    out = Output(json_mode=json_output)
    given = parse_params(param, params)
    if not given:
        raise BadInput("give --param or --params")
    with context_of(ctx).client() as api:
        changed = api.patch(f"/subscriptions/{lookup.task_id(api, task)}", {"params": given})
    out.show(
        changed,
        lambda: out.line(
            f"{changed['name']}: {json.dumps(changed['template_params'], sort_keys=True)}"
        ),
    )
