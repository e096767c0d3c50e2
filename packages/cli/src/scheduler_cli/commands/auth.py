"""``scheduler login``, ``scheduler logout`` and ``scheduler password``."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from scheduler_cli.commands.options import JsonFlag, PasswordStdin
from scheduler_cli.context import context_of
from scheduler_cli.credentials import Session
from scheduler_cli.errors import ApiError, Unreachable
from scheduler_cli.output import Output, warning
from scheduler_cli.prompts import read_password, read_username

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        metavar="URL",
        help="The server, e.g. http://127.0.0.1:8000 (default: $SCHEDULER_API_URL, else the "
        "last login).",
    ),
]


def login(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Prompted for when not given.")
    ] = None,
    password_stdin: PasswordStdin = False,
    json_output: JsonFlag = False,
) -> None:
    """Log in; the tokens are kept in your config directory (mode 0600) and renewed as needed.

    The password is prompted for (hidden) unless --password-stdin is given. This server becomes
    the default for the other commands.
    """
    cli = context_of(ctx).with_api_url(api_url)
    out = Output(json_mode=json_output)
    url = cli.api_url()
    name = read_username(username, from_stdin=password_stdin)
    password = read_password(from_stdin=password_stdin)
    with cli.client(anonymous=True) as api:
        tokens = api.post("/auth/login", {"username": name, "password": password})
    session = Session.from_tokens(tokens, api_url=url, username=name, now=time.time())
    cli.store.save(session, make_default=True)
    out.show(
        {
            "api_url": url,
            "username": name,
            "user_id": session.user_id,
            "role": session.role,
            "credentials": str(cli.store.path),
        },
        lambda: out.line(f"logged in to {url} as {name} ({session.role})"),
    )


def logout(ctx: typer.Context, api_url: ApiUrl = None, json_output: JsonFlag = False) -> None:
    """End the session: revoke its refresh token on the server and forget the tokens here."""
    cli = context_of(ctx).with_api_url(api_url)
    out = Output(json_mode=json_output)
    url = cli.api_url()
    session = cli.store.get(url)
    if session is None:
        out.show({"api_url": url, "logged_out": False}, lambda: out.note(f"not logged in to {url}"))
        return
    revoked = True
    try:
        with cli.client(anonymous=True) as api:
            api.post("/auth/logout", {"refresh_token": session.refresh_token})
    except Unreachable as error:
        revoked = False
        warning(f"{error.message}; the session is forgotten here but not revoked on the server")
    except ApiError as error:
        revoked = error.status == 401  # already expired or revoked: nothing left to revoke
        if not revoked:
            warning(f"the server did not revoke the session: {error.message}")
    finally:
        cli.store.forget(url)
    out.show(
        {"api_url": url, "logged_out": True, "revoked": revoked},
        lambda: out.line(f"logged out of {url}"),
    )


PasswordsStdin = Annotated[
    bool,
    typer.Option(
        "--passwords-stdin",
        help="Read the current password from stdin's first line and the new one from its "
        "second (for scripts).",
    ),
]


def password(
    ctx: typer.Context,
    api_url: ApiUrl = None,
    passwords_stdin: PasswordsStdin = False,
    json_output: JsonFlag = False,
) -> None:
    """Change your own password.

    Asks (hidden) for the current password and twice for the new one, unless --passwords-stdin
    is given. Every session of your account ends, on every device; this one continues with the
    new tokens the server returns.
    """
    cli = context_of(ctx).with_api_url(api_url)
    out = Output(json_mode=json_output)
    url = cli.api_url()
    current = read_password(from_stdin=passwords_stdin, prompt="Current password")
    new = read_password(from_stdin=passwords_stdin, prompt="New password", confirm=True)
    with cli.client() as api:
        tokens = api.post("/auth/password", {"current_password": current, "new_password": new})
    session = cli.store.get(url)
    if session is not None:
        cli.store.save(session.renewed(tokens, now=time.time()), make_default=False)
    out.show(
        {"api_url": url, "password_changed": True, "user_id": tokens.get("user_id")},
        lambda: out.line("password changed; your other sessions have ended"),
    )
