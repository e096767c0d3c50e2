"""Parameters given on the command line: ``--param city=Oslo`` (repeatable; a value that is
JSON — ``3``, ``true``, ``["a"]`` — is taken as that, anything else as text) and ``--params
'{"city": "Oslo"}'`` (one JSON object; ``--param`` wins on the same key)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from scheduler_cli.errors import BadInput

ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A parameter (repeatable); a JSON value (3, true, [..]) is taken as JSON.",
    ),
]
ParamsOption = Annotated[
    str | None,
    typer.Option("--params", metavar="JSON", help="Parameters as one JSON object."),
]


def parse_params(pairs: list[str] | None, document: str | None) -> dict[str, Any] | None:
    """The parameters given, or None when neither option was."""
    if not pairs and document is None:
        return None
    params: dict[str, Any] = {}
    if document is not None:
        try:
            loaded = json.loads(document)
        except json.JSONDecodeError as error:
            raise BadInput(f"--params is not JSON: {error}") from None
        if not isinstance(loaded, dict):
            raise BadInput("--params must be a JSON object")
        params.update(loaded)
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params
