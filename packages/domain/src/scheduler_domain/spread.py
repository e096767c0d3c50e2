"""Spread runs of many tasks due at the same slot (say, ``0 * * * *``) over a window.

The offset is a hash of the task and slot rather than a random draw, so every dispatcher computes
the same one and a retried dispatch of the same slot lands at the same time.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from scheduler_domain.clock import ensure_utc
from scheduler_domain.errors import ValidationError

_MILLISECOND = timedelta(milliseconds=1)


def spread_offset(task_id: str, slot: datetime, window: timedelta) -> timedelta:
    """A deterministic, roughly uniform delay in ``[0, window)``, in whole milliseconds."""
    if window < timedelta(0):
        raise ValidationError("spread window must not be negative", field="spread")
    slot = ensure_utc(slot, field="slot")
    buckets = window // _MILLISECOND
    if buckets == 0:
        return timedelta(0)
    key = f"{task_id}\x00{slot.isoformat()}".encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return (int.from_bytes(digest, "big") % buckets) * _MILLISECOND
