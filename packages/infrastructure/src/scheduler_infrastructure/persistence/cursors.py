"""Opaque keyset cursors: the client gets a token, never an offset or a raw sort key."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from scheduler_domain.errors import ValidationError


def encode_cursor(*key: str | datetime) -> str:
    values = [value.isoformat() if isinstance(value, datetime) else value for value in key]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    """The ``size`` values of ``cursor``; :class:`ValidationError` on anything malformed."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != size or not all(isinstance(v, str) for v in key):
        raise ValidationError("cursor is not valid", field="cursor")
    return key


def decode_instant(value: str) -> datetime:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("cursor is not valid", field="cursor") from None
    if instant.tzinfo is None:
        raise ValidationError("cursor is not valid", field="cursor")
    return instant
