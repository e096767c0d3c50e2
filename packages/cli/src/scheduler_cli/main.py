"""The ``scheduler`` command: the launcher and the admin tool.

``run``, ``migrate`` and ``create-admin`` work on this machine's configuration and database;
everything else is a client of the REST API (see :mod:`scheduler_cli.context`). The server-side
imports stay inside the local commands, so the admin commands start quickly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from scheduler_cli import output
from scheduler_cli.commands import (
    api_keys,
    apply,
    auth,
    bulk,
    limits,
    queues,
    runs,
    status,
    tasks,
    teams,
    templates,
    users,
    webhooks,
    workers,
)
from scheduler_cli.context import CliContext, Overrides
from scheduler_cli.errors import CliError


class _Scheduler(TyperGroup):
    """Every expected failure of any command ends here: one ``error: …`` line on stderr and
    the error's exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        wants_json = _json_requested([*getattr(ctx, "_protected_args", []), *ctx.args])
        try:
            return super().invoke(ctx)
        except CliError as error:
            if wants_json:
                output.error_json(error.problem())
            else:
                output.error(error.message)
            raise typer.Exit(error.exit_code) from None


def _json_requested(args: list[str]) -> bool:
    """Whether the command line asks for ``--json`` (before a ``--``)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


app = typer.Typer(
    name="scheduler",
    cls=_Scheduler,
    help="A distributed task scheduler: run its components and administer it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
migrate_app = typer.Typer(help="Database migrations (talks to the database directly).")
app.add_typer(migrate_app, name="migrate")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@app.callback()
def root(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            metavar="URL",
            help="The API server for the admin commands (default: $SCHEDULER_API_URL, else "
            "the last login, else http://127.0.0.1:8000).",
        ),
    ] = None,
) -> None:
    overrides = ctx.obj if isinstance(ctx.obj, Overrides) else None
    ctx.obj = CliContext.build(api_url=api_url, overrides=overrides)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _settings(component: str = "cli", *, standalone: bool = False):  # type: ignore[no-untyped-def]
    from scheduler_infrastructure.startup import StartupError, prepare

    try:
        settings = prepare(component, standalone=standalone)
    except StartupError as error:
        raise fail(str(error), 2) from None
    if component == "cli":
        # Admin commands print their own results; only problems belong on stderr.
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    return settings


@app.command()
def run(
    mode: Annotated[
        str | None,
        typer.Option(help="all, or a comma list of api, dispatcher, worker (default: run.mode)"),
    ] = None,
    migrate: Annotated[
        bool, typer.Option(help="Upgrade the database to the newest revision first.")
    ] = False,
    create_admin: Annotated[
        bool,
        typer.Option(
            help="Create the 'admin' user if missing, with $SCHEDULER_ADMIN_PASSWORD or a "
            "generated password printed once."
        ),
    ] = False,
) -> None:
    """Run the scheduler's components in this process."""
    from scheduler_cli.embedded_key import with_embedded_secrets_key
    from scheduler_cli.launcher import run_components
    from scheduler_infrastructure.config.loader import parse_run_mode
    from scheduler_infrastructure.errors import ConfigError
    from scheduler_infrastructure.event_loop import run as run_event_loop
    from scheduler_infrastructure.startup import StartupError
    from scheduler_infrastructure.waiting import StartupInterrupted

    settings = with_embedded_secrets_key(_settings("scheduler"))
    try:
        components = parse_run_mode(mode or settings.run.mode, key="--mode")
    except ConfigError as error:
        raise fail(str(error), 2) from None
    if settings.queue.backend == "memory" and not {"dispatcher", "worker"} <= set(components):
        raise fail(
            "queue.backend 'memory' needs dispatcher and worker in this process; "
            "use --mode all or a shared queue backend",
            2,
        )
    if create_admin:
        from scheduler_cli.admin import ensure_admin
        from scheduler_infrastructure.factories import database_url
        from scheduler_infrastructure.persistence.migrations import upgrade

        if migrate:
            # The settings loaded above: loading them again would miss the secrets (taken out
            # of the environment once read) and set up logging for an admin command.
            upgrade(database_url(settings.database))
            migrate = False
        _first_admin(settings, ensure_admin)
    # Like the settings' secrets: read (or not needed), so no task started later inherits it.
    os.environ.pop("SCHEDULER_ADMIN_PASSWORD", None)
    try:
        run_event_loop(run_components(settings, components, migrate=migrate, on_ready=_announce))
    except StartupInterrupted as stopped:
        print(f"scheduler: {stopped}", file=sys.stderr)
    except (StartupError, ConnectionError, OSError) as error:
        raise fail(str(error), 1) from None


def _first_admin(settings, ensure_admin) -> None:  # type: ignore[no-untyped-def]
    password = os.environ.get("SCHEDULER_ADMIN_PASSWORD") or None
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(18)
    try:
        created = asyncio.run(ensure_admin(settings, username="admin", password=password))
    except Exception as error:
        raise fail(f"cannot create the admin user: {type(error).__name__}: {error}") from None
    if created:
        shown = (
            f"password: {password}  (shown once; change it)"
            if generated
            else ("password from SCHEDULER_ADMIN_PASSWORD")
        )
        err.print(f"created user 'admin' — {shown}", highlight=False)


def _announce(api_url: str | None) -> None:
    if api_url is not None:
        err.print(f"API:  {api_url}/api/v1   docs: {api_url}/schema", highlight=False)
        err.print(f"Console: {api_url}/ui", highlight=False)


def _database_url() -> str:
    from scheduler_infrastructure.factories import database_url

    return database_url(_settings().database)


@migrate_app.command("upgrade")
def migrate_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (default: to the newest revision)."""
    from scheduler_infrastructure.persistence import migrations

    url = _database_url()
    try:
        migrations.upgrade(url, revision)
    except Exception as error:
        raise fail(f"upgrade failed: {type(error).__name__}: {error}") from None
    out.print(f"database at revision {migrations.current(url) or 'base'}")


@migrate_app.command("downgrade")
def migrate_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' for empty.")],
) -> None:
    """Downgrade the database schema to REVISION."""
    from scheduler_infrastructure.persistence import migrations

    url = _database_url()
    try:
        migrations.downgrade(url, revision)
    except Exception as error:
        raise fail(f"downgrade failed: {type(error).__name__}: {error}") from None
    out.print(f"database at revision {migrations.current(url) or 'base'}")


@migrate_app.command("current")
def migrate_current() -> None:
    """Show the database's current revision and the newest one available."""
    from scheduler_infrastructure.persistence import migrations

    url = _database_url()
    try:
        current = migrations.current(url)
    except Exception as error:
        raise fail(f"cannot read the revision: {type(error).__name__}: {error}") from None
    newest = migrations.head()
    out.print(f"current: {current or 'base (empty)'}\nnewest:  {newest}")
    if current != newest:
        raise typer.Exit(3)


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="Name of the admin account.")] = "admin",
    password_env: Annotated[
        str,
        typer.Option(help="Environment variable holding the password; generated if unset."),
    ] = "SCHEDULER_ADMIN_PASSWORD",  # noqa: S107 - the variable's name, not a password
) -> None:
    """Create the admin account (talks to the database directly)."""
    from scheduler_cli.admin import ensure_admin

    settings = _settings()
    password = os.environ.get(password_env) or None
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(18)
    try:
        created = asyncio.run(ensure_admin(settings, username=username, password=password))
    except Exception as error:
        raise fail(f"{type(error).__name__}: {error}") from None
    if not created:
        out.print(f"user {username!r} already exists; password unchanged")
        return
    out.print(f"created admin user {username!r}")
    if generated:
        out.print(f"password (shown once): [bold]{password}[/bold]")


app.command()(auth.login)
app.command()(auth.logout)
app.command()(auth.password)
tasks.app.command("bulk")(bulk.task_bulk)
runs.app.command("bulk")(bulk.run_bulk)
runs.app.command("batch")(bulk.run_batch)
app.add_typer(tasks.app, name="tasks")
app.command("apply")(apply.apply)
app.command("export")(apply.export)
app.add_typer(runs.app, name="runs")
app.add_typer(workers.app, name="workers")
app.add_typer(queues.app, name="queues")
app.add_typer(limits.app, name="limits")
app.add_typer(limits.circuits_app, name="circuits")
app.add_typer(users.app, name="users")
app.add_typer(teams.app, name="teams")
app.add_typer(api_keys.app, name="api-keys")
app.add_typer(templates.app, name="templates")
app.add_typer(webhooks.app, name="webhooks")
app.command("status")(status.status)


def entrypoint() -> None:
    """Console-script entry: never a traceback for expected failures."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
