"""In-process stand-ins for the shared rate limiter and the singleton-loop leases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler_domain.lease import Lease
from scheduler_domain.rate_limit import RateLimit


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: datetime


class InMemoryRateLimiter:
    """A token bucket per key; records every answer in ``granted`` and ``delayed``."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self.granted: list[str] = []
        self.delayed: list[tuple[str, timedelta]] = []

    async def acquire(self, key: str, limit: RateLimit, *, now: datetime) -> timedelta:
        return (await self.acquire_counted(key, limit, now=now))[0]

    async def acquire_counted(
        self, key: str, limit: RateLimit, *, now: datetime
    ) -> tuple[timedelta, float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(limit.capacity), now)
        elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
        bucket.tokens = min(float(limit.capacity), bucket.tokens + elapsed * limit.per_second)
        bucket.updated_at = max(now, bucket.updated_at)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self.granted.append(key)
            return timedelta(0), bucket.tokens
        wait = timedelta(seconds=(1.0 - bucket.tokens) / limit.per_second)
        self.delayed.append((key, wait))
        return wait, bucket.tokens

    async def tokens(self, key: str, limit: RateLimit, *, now: datetime) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(limit.capacity)
        elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
        return min(float(limit.capacity), bucket.tokens + elapsed * limit.per_second)


class InMemoryLeaseStore:
    """Named leases; ``acquired`` records each successful take or renewal as (resource, holder)."""

    def __init__(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.acquired: list[tuple[str, str]] = []

    async def try_acquire(
        self, resource: str, *, holder: str, ttl: timedelta, now: datetime
    ) -> bool:
        current = self.leases.get(resource)
        if current is not None and current.holder != holder and not current.is_expired(now):
            return False
        self.leases[resource] = Lease(resource=resource, holder=holder, expires_at=now + ttl)
        self.acquired.append((resource, holder))
        return True

    async def release(self, resource: str, *, holder: str) -> None:
        current = self.leases.get(resource)
        if current is not None and current.holder == holder:
            del self.leases[resource]
