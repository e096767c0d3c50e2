from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Source of the current instant. ``now()`` returns an aware UTC datetime; tests use a
    controllable fake so that schedules and leases can be driven without sleeping."""

    def now(self) -> datetime: ...
