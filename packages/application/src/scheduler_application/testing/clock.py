"""A clock the test moves by hand, so schedules, leases and backoff need no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler_domain.clock import ensure_utc


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        start = now if now is not None else datetime(2030, 1, 1, tzinfo=UTC)
        self._now = ensure_utc(start, field="now")

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, *, seconds: float = 0) -> datetime:
        """Move forward by ``delta`` and/or ``seconds``; returns the new instant."""
        step = (delta or timedelta(0)) + timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards; use set() to jump")
        self._now += step
        return self._now

    def set(self, now: datetime) -> datetime:
        self._now = ensure_utc(now, field="now")
        return self._now
