"""The values of ``--secret-env``, read so that they never land in shell history.

``NAME=@path`` reads the file (one trailing line break dropped), ``NAME=@-`` reads stdin,
``NAME`` alone asks on the terminal without echo; ``NAME=VALUE`` is accepted too, for scripts
whose values come from variables (``NAME="$TOKEN"``), and ``NAME=@@…`` is a value that starts
with ``@``. ``--unset-secret-env NAME`` removes one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from scheduler_cli.errors import BadInput


def secret_env_changes(
    items: list[str], unset: list[str], *, stdin_taken: bool = False
) -> dict[str, str | None]:
    """The ``secret_env`` object for the request body: NAME → value, or None to remove."""
    changes: dict[str, str | None] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not name:
            raise BadInput(
                f"--secret-env takes NAME=VALUE, NAME=@file, NAME=@- or NAME, not {item!r}"
            )
        if name in changes:
            raise BadInput(f"--secret-env gives {name} twice")
        if not sep:
            changes[name] = _prompt(name)
        elif raw == "@-":
            if stdin_taken:
                raise BadInput("stdin can hold only one thing: --file - or one NAME=@-")
            stdin_taken = True
            changes[name] = _strip_line_break(sys.stdin.read())
        elif raw.startswith("@@"):
            changes[name] = raw[1:]
        elif raw.startswith("@"):
            changes[name] = _read_file(name, raw[1:])
        else:
            changes[name] = raw
    for name in unset:
        if name in changes:
            raise BadInput(f"{name} is both set (--secret-env) and removed (--unset-secret-env)")
        changes[name] = None
    return changes


def _prompt(name: str) -> str:
    if not sys.stdin.isatty():
        raise BadInput(f"--secret-env {name} asks for the value on a terminal; use {name}=@file")
    return str(typer.prompt(f"Value of {name}", hide_input=True))


def _read_file(name: str, path: str) -> str:
    try:
        return _strip_line_break(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise BadInput(
            f"--secret-env {name}: cannot read {path}: {error.strerror or error}"
        ) from None
    except UnicodeDecodeError:
        raise BadInput(f"--secret-env {name}: {path} is not UTF-8 text") from None


def _strip_line_break(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text
