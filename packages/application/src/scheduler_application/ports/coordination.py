from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from scheduler_domain.rate_limit import RateLimit


class LeaseStore(Protocol):
    """Named leases for loops that should run on one process at a time (relay, reaper)."""

    async def try_acquire(
        self, resource: str, *, holder: str, ttl: timedelta, now: datetime
    ) -> bool:
        """Take or renew the lease; False while another holder's lease is unexpired."""
        ...

    async def release(self, resource: str, *, holder: str) -> None: ...


class RateLimiter(Protocol):
    """A token bucket per key shared by every process that uses the same backend."""

    async def acquire(self, key: str, limit: RateLimit, *, now: datetime) -> timedelta:
        """Take one token. Returns zero when granted, else how long until one is available
        (nothing is taken then): the caller delays the run, it never drops it."""
        ...


class CountingRateLimiter(RateLimiter, Protocol):
    """A :class:`RateLimiter` that also says how many tokens the bucket has left — what a
    client is told in ``RateLimit-Remaining``."""

    async def acquire_counted(
        self, key: str, limit: RateLimit, *, now: datetime
    ) -> tuple[timedelta, float]:
        """:meth:`acquire`, and the tokens left in the bucket after it."""
        ...


class RateInspector(Protocol):
    """Reads a token bucket without taking from it: what ``/limits`` shows as current use."""

    async def tokens(self, key: str, limit: RateLimit, *, now: datetime) -> float:
        """The tokens the bucket holds now (a bucket never used is full)."""
        ...
