"""``scheduler api-keys …``: keys for scripts, CI and workers."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler_cli import lookup, times
from scheduler_cli.commands.options import AllPages, JsonFlag, Limit
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Column, Output, when

app = typer.Typer(
    help="Issue, list and revoke API keys (use one with SCHEDULER_API_KEY=sk_…).",
    no_args_is_help=True,
)

KEY_COLUMNS: list[Column] = [
    ("NAME", lambda k: k["name"]),
    ("ID", lambda k: k["id"]),
    ("PREFIX", lambda k: k["prefix"]),
    ("ROLE", lambda k: k["role"]),
    ("OWNER", lambda k: k["owner_id"]),
    ("EXPIRES", lambda k: when(k.get("expires_at")) or "never"),
    ("LAST USED", lambda k: when(k.get("last_used_at"))),
    ("REVOKED", lambda k: when(k.get("revoked_at"))),
]


@app.command("issue")
def issue(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. ci.")],
    role: Annotated[
        str | None,
        typer.Option(help="The key's role, at most yours (default: yours); worker: admins only."),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Expire after this span: 90d, 12h…")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option(help="Expire at this time: 2031-01-01T00:00:00Z.")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Issue a key. The secret is printed once, here; only its hash is stored."""
    out = Output(json_mode=json_output)
    if expires_in and expires_at:
        raise BadInput("give --expires-in or --expires-at, not both")
    expiry = None
    if expires_in:
        expiry = times.later(expires_in, option="--expires-in")
    elif expires_at:
        expiry = times.api_time(times.instant(expires_at, option="--expires-at"))
    body = {"name": name, "role": role, "expires_at": expiry}
    with context_of(ctx).client() as api:
        issued = api.post("/api-keys", {k: v for k, v in body.items() if v is not None})
    key = issued["api_key"]

    def render() -> None:
        out.line(issued["key"])
        out.note(
            f"API key {key['name']} ({key['role']}, id {key['id']}, expires "
            f"{when(key.get('expires_at')) or 'never'}): shown this once, store it now"
        )

    out.show(issued, render)


@app.command("list")
def list_keys(
    ctx: typer.Context,
    owner: Annotated[
        str | None, typer.Option(help="Only this user's keys, name or id (admins).")
    ] = None,
    limit: Limit = 50,
    all_pages: AllPages = False,
    json_output: JsonFlag = False,
) -> None:
    """List your API keys (admins: everyone's)."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        owner_id = lookup.user_id(api, owner) if owner else None
        keys, more = api.page("/api-keys", limit=None if all_pages else limit, owner_id=owner_id)
    out.show(keys, lambda: out.table(keys, KEY_COLUMNS, empty="no API keys"))
    out.more(len(keys), has_more=more)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key's name or id.", metavar="KEY")],
    json_output: JsonFlag = False,
) -> None:
    """Revoke a key; requests with it are refused from now on."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        revoked = api.post(f"/api-keys/{lookup.api_key_id(api, key)}/revoke")
    out.show(revoked, lambda: out.line(f"revoked API key {revoked['name']} ({revoked['prefix']}…)"))
