"""``scheduler webhooks …``: subscriptions that POST the event log to a URL, signed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from scheduler_cli import lookup
from scheduler_cli.commands.options import JsonFlag, Limit
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Column, Output, when

app = typer.Typer(
    help=(
        "Webhooks: the events of your tasks POSTed to a URL, signed in the Standard Webhooks "
        "format (docs/events.md)."
    ),
    no_args_is_help=True,
)

WEBHOOK_COLUMNS: list[Column] = [
    ("ID", lambda w: w["id"]),
    ("URL", lambda w: w["url"]),
    ("EVENTS", lambda w: ",".join(w["event_types"]) or "all"),
    ("ENABLED", lambda w: "yes" if w["enabled"] else "no"),
    ("FAILURES", lambda w: w["consecutive_failures"]),
    ("DESCRIPTION", lambda w: w["description"]),
]
DELIVERY_COLUMNS: list[Column] = [
    ("WHEN", lambda d: when(d["updated_at"])),
    ("EVENT", lambda d: d["event_kind"]),
    ("EVENT ID", lambda d: d["event_id"]),
    ("STATUS", lambda d: d["status"]),
    ("CODE", lambda d: d.get("response_code") or "-"),
    ("MS", lambda d: d.get("latency_ms") if d.get("latency_ms") is not None else "-"),
    ("ATTEMPTS", lambda d: d["attempts"]),
    ("LAST ERROR", lambda d: d.get("last_error") or ""),
]

Events = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        "-e",
        help="An event type (run.failed, task.created, run.*); repeat it. Default: every event.",
    ),
]
Statuses = Annotated[
    list[str] | None,
    typer.Option("--status", help="Only run transitions to this status; repeat it."),
]
WebhookRef = Annotated[str, typer.Argument(help="The webhook's id.", metavar="WEBHOOK")]


def _record(out: Output, hook: dict[str, Any]) -> None:
    out.record(
        [
            ("id", hook["id"]),
            ("url", hook["url"]),
            ("event types", ", ".join(hook["event_types"]) or "all"),
            ("task", hook.get("task_id") or "-"),
            ("statuses", ", ".join(hook["statuses"]) or "all"),
            ("enabled", "yes" if hook["enabled"] else "no"),
            ("disabled because", hook.get("disabled_reason") or "-"),
            ("failures in a row", hook["consecutive_failures"]),
            ("next attempt", when(hook.get("next_attempt_at")) or "-"),
            ("description", hook["description"]),
        ]
    )


def _id(ref: str) -> str:
    if not lookup.is_id(ref):
        raise BadInput(f"{ref!r} is not a webhook id (see `scheduler webhooks list`)")
    return ref.lower()


@app.command("create")
def create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where to POST the events (http:// or https://).")],
    event: Events = None,
    task: Annotated[str | None, typer.Option(help="Only this task's events (name or id).")] = None,
    status: Statuses = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it switched off.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Subscribe a URL. The signing secret (whsec_…) is printed once, here."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        body: dict[str, Any] = {
            "url": url,
            "event_types": event or [],
            "statuses": status or [],
            "description": description,
            "enabled": not disabled,
        }
        if task:
            body["task_id"] = lookup.task_id(api, task)
        created = api.post("/webhooks", body)

    def render() -> None:
        out.line(created["secret"])
        out.note(
            f"webhook {created['webhook']['id']} → {created['webhook']['url']}: the secret above "
            "is shown this once; verify deliveries with it (docs/events.md)"
        )

    out.show(created, render)


@app.command("list")
def list_webhooks(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """List your webhooks (admins and operators: everyone's)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        hooks = api.get("/webhooks")["items"]
    out.show(hooks, lambda: out.table(hooks, WEBHOOK_COLUMNS, empty="no webhooks"))


@app.command("get")
def get(ctx: typer.Context, webhook: WebhookRef, json_output: JsonFlag = False) -> None:
    """Show a webhook and its delivery state."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        hook = api.get(f"/webhooks/{_id(webhook)}")
    out.show(hook, lambda: _record(out, hook))


@app.command("update")
def update(
    ctx: typer.Context,
    webhook: WebhookRef,
    url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
    event: Events = None,
    all_events: Annotated[
        bool, typer.Option("--all-events", help="Every event type again.")
    ] = False,
    status: Statuses = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Switch on (clears the failure streak) or off."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Change a webhook; only the options given change."""
    out = Output(json_mode=json_output)
    changes: dict[str, Any] = {}
    if url is not None:
        changes["url"] = url
    if event:
        changes["event_types"] = event
    if all_events:
        changes["event_types"] = []
    if status is not None:
        changes["statuses"] = status
    if description is not None:
        changes["description"] = description
    if enable is not None:
        changes["enabled"] = enable
    if not changes:
        raise BadInput("nothing to change: give at least one option")
    with context_of(ctx).client() as api:
        hook = api.patch(f"/webhooks/{_id(webhook)}", changes)
    out.show(hook, lambda: _record(out, hook))


@app.command("delete")
def delete(ctx: typer.Context, webhook: WebhookRef, json_output: JsonFlag = False) -> None:
    """Delete a webhook and its delivery log."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        api.delete(f"/webhooks/{_id(webhook)}")
    out.show({"deleted": webhook}, lambda: out.line(f"deleted webhook {webhook}"))


@app.command("deliveries")
def deliveries(
    ctx: typer.Context, webhook: WebhookRef, limit: Limit = 50, json_output: JsonFlag = False
) -> None:
    """The delivery log, newest first: status, response code, latency, attempts."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        page = api.get(f"/webhooks/{_id(webhook)}/deliveries", limit=limit)
    items = page["items"]
    out.show(items, lambda: out.table(items, DELIVERY_COLUMNS, empty="no deliveries yet"))


@app.command("test")
def send_test(ctx: typer.Context, webhook: WebhookRef, json_output: JsonFlag = False) -> None:
    """Send a signed webhook.test event now and show how it went."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        delivery = api.post(f"/webhooks/{_id(webhook)}/test")
    out.show(delivery, lambda: out.table([delivery], DELIVERY_COLUMNS))
