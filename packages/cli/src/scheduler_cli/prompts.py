"""Asking for secrets: hidden prompts on a terminal, or one line of stdin for scripts."""

from __future__ import annotations

import sys

import typer

from scheduler_cli.errors import BadInput


def read_password(*, from_stdin: bool, prompt: str = "Password", confirm: bool = False) -> str:
    """The password from stdin's first line (``--password-stdin``) or a hidden prompt."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = str(typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    if not password:
        raise BadInput("the password is empty")
    return password


def read_username(username: str | None, *, from_stdin: bool) -> str:
    if username:
        return username
    if from_stdin:
        raise BadInput("--password-stdin needs --username (stdin holds the password)")
    return str(typer.prompt("Username")).strip()
