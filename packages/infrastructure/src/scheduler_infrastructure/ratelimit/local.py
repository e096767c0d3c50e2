"""An in-process token bucket per key: the rate limiter without Redis, and Redis's fallback."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler_domain.rate_limit import RateLimit

#: Buckets kept; the least recently used are dropped beyond it (a dropped bucket is full again,
#: which only matters for keys idle long enough to have refilled anyway).
MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: datetime


class LocalRateLimiter:
    """Refills by elapsed time (``now`` as the caller sees it), takes one token or answers how
    long until one is available, taking nothing then. Limits hold per process only."""

    def __init__(self, *, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_buckets = max_buckets

    async def acquire(self, key: str, limit: RateLimit, *, now: datetime) -> timedelta:
        return self.take(key, limit, now=now)[0]

    async def acquire_counted(
        self, key: str, limit: RateLimit, *, now: datetime
    ) -> tuple[timedelta, float]:
        return self.take(key, limit, now=now)

    def take(self, key: str, limit: RateLimit, *, now: datetime) -> tuple[timedelta, float]:
        """The wait (zero: a token was taken) and the tokens left."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(limit.capacity), now)
        self._buckets[key] = bucket
        if len(self._buckets) > self._max_buckets:
            self._buckets.popitem(last=False)
        elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
        bucket.tokens = min(float(limit.capacity), bucket.tokens + elapsed * limit.per_second)
        bucket.updated_at = max(now, bucket.updated_at)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return timedelta(0), bucket.tokens
        return timedelta(seconds=(1.0 - bucket.tokens) / limit.per_second), bucket.tokens

    async def tokens(self, key: str, limit: RateLimit, *, now: datetime) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(limit.capacity)
        elapsed = max((now - bucket.updated_at).total_seconds(), 0.0)
        return min(float(limit.capacity), bucket.tokens + elapsed * limit.per_second)
