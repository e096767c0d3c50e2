"""Leases on named resources, for loops that should run on one dispatcher at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True, kw_only=True)
class Lease:
    resource: str
    holder: str
    expires_at: datetime

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    def is_held_by(self, holder: str, now: datetime) -> bool:
        return self.holder == holder and not self.is_expired(now)
