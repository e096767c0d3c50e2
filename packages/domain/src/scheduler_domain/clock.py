"""Time helpers shared by the domain: every instant the domain handles is aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler_domain.errors import ValidationError


def ensure_utc(value: datetime, *, field: str) -> datetime:
    """Refuse naive datetimes (their meaning depends on the machine) and normalise to UTC."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} must carry a timezone", field=field)
    return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)
