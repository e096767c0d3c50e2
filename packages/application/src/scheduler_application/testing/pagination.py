"""Opaque keyset cursors: the client gets a token, never an offset or a raw sort key."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from scheduler_domain.errors import ValidationError


def encode_cursor(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValidationError("cursor is not valid", field="cursor") from None
    if not isinstance(key, list):
        raise ValidationError("cursor is not valid", field="cursor")
    return key
