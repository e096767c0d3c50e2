"""Options several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[
    bool,
    typer.Option("--json", help="Print JSON for scripts: only JSON on stdout, notes on stderr."),
]
Limit = Annotated[
    int, typer.Option("--limit", "-n", min=1, help="Show at most this many (newest first).")
]
AllPages = Annotated[bool, typer.Option("--all", help="Show every one (ignores --limit).")]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0,
        help="Give up after this many seconds (exit code 124); default: wait as long as it takes.",
    ),
]
Interval = Annotated[
    float,
    typer.Option("--interval", min=0.05, help="Seconds between polls once the run is settled."),
]
FollowRetries = Annotated[
    bool,
    typer.Option(
        "--follow-retries/--no-follow-retries",
        help="When an attempt fails and the task's retry policy grants another, wait for that.",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from stdin's first line."),
]
