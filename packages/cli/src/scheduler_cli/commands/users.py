"""``scheduler users …``: user administration (admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler_cli import lookup
from scheduler_cli.commands.options import AllPages, JsonFlag, Limit, PasswordStdin
from scheduler_cli.context import context_of
from scheduler_cli.errors import BadInput
from scheduler_cli.output import Column, Output, when
from scheduler_cli.prompts import read_password

app = typer.Typer(help="Manage user accounts (admins only).", no_args_is_help=True)

UserArg = Annotated[str, typer.Argument(help="The user's name or id.", metavar="USER")]
Role = Annotated[
    str | None, typer.Option(help="admin, operator, user, viewer or worker.", metavar="ROLE")
]

USER_COLUMNS: list[Column] = [
    ("USERNAME", lambda u: u["username"]),
    ("ID", lambda u: u["id"]),
    ("ROLE", lambda u: u["role"]),
    ("DISABLED", lambda u: u["disabled"]),
    ("CREATED", lambda u: when(u["created_at"])),
]


def _summary(user: dict[str, object]) -> str:
    disabled = ", disabled" if user.get("disabled") else ""
    return f"{user['username']} ({user['role']}{disabled}) {user['id']}"


@app.command("list")
def list_users(
    ctx: typer.Context,
    limit: Limit = 50,
    all_pages: AllPages = False,
    json_output: JsonFlag = False,
) -> None:
    """List user accounts."""
    out = Output(json_mode=json_output)
    with context_of(ctx).client() as api:
        users, more = api.page("/users", limit=None if all_pages else limit)
    out.show(users, lambda: out.table(users, USER_COLUMNS, empty="no users"))
    out.more(len(users), has_more=more)


@app.command("create")
def create(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="The new account's name.")],
    role: Role = "user",
    password_stdin: PasswordStdin = False,
    json_output: JsonFlag = False,
) -> None:
    """Create an account; its password is prompted for (twice, hidden) unless --password-stdin."""
    out = Output(json_mode=json_output)
    password = read_password(from_stdin=password_stdin, prompt="New password", confirm=True)
    with context_of(ctx).client() as api:
        user = api.post("/users", {"username": username, "password": password, "role": role})
    out.show(user, lambda: out.line(f"created user {_summary(user)}"))


@app.command("update")
def update(
    ctx: typer.Context,
    user: UserArg,
    role: Role = None,
    disabled: Annotated[
        bool | None,
        typer.Option(
            "--disable/--enable",
            help="Disabling refuses the user's tokens and keys at once and ends their sessions.",
        ),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Change a user's role, or disable or enable the account."""
    out = Output(json_mode=json_output)
    body = {k: v for k, v in (("role", role), ("disabled", disabled)) if v is not None}
    if not body:
        raise BadInput("nothing to change: give --role, --disable or --enable")
    with context_of(ctx).client() as api:
        changed = api.patch(f"/users/{lookup.user_id(api, user)}", body)
    out.show(changed, lambda: out.line(f"updated user {_summary(changed)}"))


@app.command("reset-password")
def reset_password(
    ctx: typer.Context,
    user: UserArg,
    password_stdin: PasswordStdin = False,
    json_output: JsonFlag = False,
) -> None:
    """Set a new password for a user; their sessions end."""
    out = Output(json_mode=json_output)
    password = read_password(from_stdin=password_stdin, prompt="New password", confirm=True)
    with context_of(ctx).client() as api:
        user_id = lookup.user_id(api, user)
        api.post(f"/users/{user_id}/reset-password", {"password": password})
    out.show(
        {"id": user_id, "password_reset": True},
        lambda: out.line(f"password of {user} reset; their sessions have ended"),
    )
