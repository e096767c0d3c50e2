"""``scheduler status``: which server, who you are, and how it is doing."""

from __future__ import annotations

from typing import Any

import typer

from scheduler_cli.commands.options import JsonFlag
from scheduler_cli.context import context_of
from scheduler_cli.output import Output


def status(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Show the server's health and version, and who you are.

    Admins and operators also see runs and workers by status. Exits 1 when the server reports
    itself degraded.
    """
    out = Output(json_mode=json_output)
    cli = context_of(ctx)
    with cli.client() as api:
        me = api.get("/auth/me")
        system = api.get("/system")
    report = {"api_url": api.api_url, "me": me, "system": system}
    out.show(report, lambda: out.record(_pairs(api.api_url, me, system)))
    if system.get("status") != "ok":
        raise typer.Exit(1)


def _pairs(url: str, me: dict[str, Any], system: dict[str, Any]) -> list[tuple[str, Any]]:
    config = system.get("config") or {}
    checks = system.get("checks") or {}
    pairs: list[tuple[str, Any]] = [
        ("server", url),
        ("status", system.get("status")),
        ("version", f"{system.get('version')} (API {system.get('api_version')})"),
        ("checks", ", ".join(f"{k} {v}" for k, v in checks.items()) or None),
        ("you", f"{me['user']['username']} ({me['role']}, via {me['via']})"),
        ("database", config.get("database_backend")),
        ("queue", config.get("queue_backend")),
        ("uptime", f"{system.get('uptime_seconds', 0):.0f}s"),
    ]
    for label, key in (("runs", "runs_by_status"), ("workers", "workers_by_status")):
        counts = system.get(key)
        if counts is not None:
            pairs.append((label, ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    return pairs
