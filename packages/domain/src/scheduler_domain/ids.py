"""Identifiers: UUIDv7 strings, so ids sort by creation time (index locality, stable cursors)."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version, variant, then random bits."""
    value = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    value[6] = (value[6] & 0x0F) | 0x70  # version 7, over the first random bits
    value[8] = (value[8] & 0x3F) | 0x80  # the RFC's variant (0b10)
    # The canonical form (8-4-4-4-12) written out from the bytes' hex: ``uuid.UUID`` built
    # and checked an object per id, and integer arithmetic cost a fifth more than this.
    digits = value.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
