"""Column types that behave the same on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

_JSON = msgspec.json.Encoder()


def json_text(value: Any) -> str:
    """A JSON document as the text a ``CAST(... AS jsonb)`` of an array element reads: the
    statements that write many rows pass their JSON columns so. msgspec's encoder, a tenth of
    ``json.dumps``'s cost (two or three per run: its events' details); it writes what
    ``json.dumps`` writes for what the rows hold (a non-finite float becomes ``null``, which
    PostgreSQL's ``jsonb`` takes, where ``NaN`` was refused)."""
    return _JSON.encode(value).decode()


class UTCDateTime(TypeDecorator[datetime]):
    """An instant: ``timestamptz`` on PostgreSQL, microsecond text on SQLite.

    Binds only aware datetimes (a naive one is a bug: its meaning depends on the machine) and
    always returns aware UTC datetimes, so values round-trip exactly on both backends. SQLite
    stores them as naive UTC text of fixed width, so comparisons sort chronologically.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_document() -> TypeEngine[Any]:
    """JSON text on SQLite, JSONB on PostgreSQL; Python ``None`` is stored as SQL NULL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
