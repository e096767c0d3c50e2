"""Checks every request passes before a handler parses it: things no JSON decoder should be
asked to cope with.

A body that is not UTF-8 or that nests deeper than :data:`MAX_JSON_DEPTH` is malformed (400,
``field`` ``body``) before it reaches the decoder, which would otherwise raise deep inside
the framework (a 500) or recurse until the interpreter gives up. NUL characters are refused
(422) in URLs and in JSON bodies: PostgreSQL stores NUL in neither text nor JSON, and no
field of this API has a use for it.
"""

from __future__ import annotations

import re
from typing import Any

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


async def check_request(request: Request[Any, Any, Any]) -> None:
    if "\x00" in request.url.path or b"%00" in request.scope.get("query_string", b""):
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
