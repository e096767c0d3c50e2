"""Checks every request passes before a handler parses it: things no JSON decoder should be
asked to cope with.

A body that is not UTF-8 or that nests deeper than :data:`MAX_JSON_DEPTH` is malformed (400,
``field`` ``body``) before it reaches the decoder, which would otherwise raise deep inside
the framework (a 500) or recurse until the interpreter gives up. NUL characters are refused
(422) in URLs and in JSON bodies: PostgreSQL stores NUL in neither text nor JSON, and no
field of this API has a use for it.

A body declared as a msgspec struct is also decoded strictly here: the framework converts
laxly (``0`` for ``false``, ``"5"`` for ``5``), which the OpenAPI document does not promise,
so such values are refused (422 naming the field) as the document says.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec
from litestar import Request

from scheduler_api.controllers.worker_protocol import ALLOW_NUL
from scheduler_api.errors import MalformedBody
from scheduler_domain.errors import ValidationError

#: The deepest nesting of arrays and objects a JSON body may have; the API's own documents
#: need fewer than ten levels, a task's ``params`` a few more.
MAX_JSON_DEPTH = 64

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: A JSON ``\u0000`` escape (not itself escaped).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
#: A JSON string literal (an unrolled loop: no backtracking on long strings).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_AT_PATH = re.compile(r"at `\$\.?([^`]*)`")
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]*)`")


async def check_request(request: Request[Any, Any, Any]) -> None:
    # The decoded path, as routing sees it (``%00`` arrives as NUL).
    if "\x00" in request.scope["path"] or b"%00" in request.scope.get("query_string", b""):
        raise ValidationError("NUL characters are not accepted in URLs", field="query")
    if request.method not in _BODY_METHODS:
        return
    body = await request.body()
    if not body:
        return
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise MalformedBody(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    if not request.route_handler.opt.get(ALLOW_NUL) and _JSON_NUL.search(body):
        raise ValidationError("NUL characters are not accepted in request bodies", field="body")
    declared = _struct_body(request)
    if declared is not None:
        try:
            msgspec.json.decode(body, type=declared, strict=True)
        except msgspec.ValidationError as exc:
            raise ValidationError(str(exc), field=_field_of(str(exc))) from None
        except msgspec.DecodeError:
            pass  # not JSON at all: the framework answers that itself (400)


def _struct_body(request: Request[Any, Any, Any]) -> Any:
    """The handler's body type when it is a msgspec struct (or one or null), else None."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return None
    candidates = (data.annotation, *typing.get_args(data.annotation))
    if any(isinstance(c, type) and issubclass(c, msgspec.Struct) for c in candidates):
        return data.annotation
    return None


def _field_of(message: str) -> str:
    """The dotted path msgspec's message names (``retry.max_attempts``), else ``body``."""
    at = _AT_PATH.search(message)
    parts = [at.group(1)] if at is not None and at.group(1) else []
    named = _NAMED_FIELD.search(message)
    if named is not None:
        parts.append(named.group(1))
    return ".".join(parts) or "body"


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether arrays and objects in the JSON text ``body`` nest deeper than ``limit``
    (brackets inside strings do not count). Linear in the body and never recursive; a body
    with no more than ``limit`` opening brackets in all is not scanned at all."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub(b"", body)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
