"""Request parameters shared by the controllers: page limits, ids, time bounds."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import msgspec
from litestar.openapi.spec import OpenAPIFormat
from litestar.params import QueryParameter

from scheduler_api.services import ApiOptions
from scheduler_application.errors import NotFound
from scheduler_domain.errors import ValidationError

T = TypeVar("T")
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LIMIT_DESCRIPTION = "Page size; values above the server's cap (max_page_size) are clamped to it"
CURSOR_DESCRIPTION = (
    "Opaque cursor from the previous page's next_cursor: a position and its MAC, both"
    " base64url, joined by a dot"
)
#: The shape of every cursor the server makes (:func:`seal_cursor`): refused otherwise.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$"
Cursor = Annotated[
    str | None,
    QueryParameter(max_length=512, pattern=CURSOR_PATTERN, description=CURSOR_DESCRIPTION),
]

#: A time bound in the query: an RFC 3339 date-time with its offset, and nothing else (the
#: framework's own conversion would also take a Unix timestamp, which the document does not
#: offer).
InstantQuery = Annotated[
    str | None,
    QueryParameter(
        format=OpenAPIFormat.DATE_TIME,
        max_length=64,
        description="RFC 3339 date-time with an offset (2030-01-01T00:00:00Z)",
    ),
]


def page_size(limit: int, options: ApiOptions) -> int:
    """Clamp (not refuse) a large ``limit``: a client asking for a million gets one full page."""
    if limit < 1:
        raise ValidationError("limit must be at least 1", field="limit")
    return min(limit, options.page_cap)


def object_id(value: str, *, kind: str, field: str) -> str:
    """Ids are UUIDs; anything else cannot name an object, so it is not found."""
    if not _ID.match(value):
        raise NotFound(f"{kind} {value[:80]!r} not found", field=field)
    return value


def instant(value: datetime | None, *, field: str) -> datetime | None:
    """An aware instant in UTC; naive times are refused rather than guessed."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} needs a time zone offset (e.g. Z)", field=field)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError(f"{field} is out of range", field=field) from None


def query_instant(value: str | None, *, field: str) -> datetime | None:
    """An :data:`InstantQuery` value as an aware instant in UTC."""
    if value is None:
        return None
    try:
        parsed = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise ValidationError(
            f"{field} must be an RFC 3339 date-time such as 2030-01-01T00:00:00Z", field=field
        ) from None
    return instant(parsed, field=field)


def seal_cursor(cursor: str | None, options: ApiOptions) -> str | None:
    """The cursor a client sees: the repository's cursor and a MAC over it."""
    if cursor is None:
        return None
    return f"{cursor}.{_mac(cursor, options)}"


def open_cursor(cursor: str | None, options: ApiOptions) -> str | None:
    """The repository's cursor inside a sealed one; a forged or altered cursor is invalid
    before any of it reaches a query."""
    if cursor is None:
        return None
    inner, _, mac = cursor.rpartition(".")
    expected = _mac(inner, options).encode()
    if not inner or not hmac.compare_digest(mac.encode(), expected):
        raise ValidationError("cursor is not valid", field="cursor")
    return inner


def _mac(cursor: str, options: ApiOptions) -> str:
    digest = hmac.new(options.cursor_key, cursor.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def encode_position(*key: str) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(cursor: str, size: int) -> list[str]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != size or not all(isinstance(v, str) for v in key):
        raise ValidationError("cursor is not valid", field="cursor")
    return key


def slice_page(
    items: Sequence[T],
    *,
    key: Callable[[T], tuple[str, str]],
    limit: int,
    cursor: str | None,
) -> tuple[list[T], str | None]:
    """Keyset paging over a short list already in memory (workers, API keys)."""
    ordered = sorted(items, key=key)
    if cursor is not None:
        first, second = decode_position(cursor, 2)
        ordered = [item for item in ordered if key(item) > (first, second)]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, encode_position(*key(page[-1])) if more and page else None
