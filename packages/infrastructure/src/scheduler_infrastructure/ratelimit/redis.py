"""Token buckets in Redis, shared by every dispatcher: one atomic Lua script per acquisition.

The bucket of key ``k`` is the hash ``<prefix>:k`` with the tokens left and when they were
counted. The script refills by the time elapsed on the *Redis server's* clock (so dispatchers
with skewed clocks share one bucket), takes a token or answers how long until one is available,
and lets the key expire once the bucket would be full again.

Redis down is not an outage of the scheduler: the limiter answers from an in-process bucket per
key (limits then hold per dispatcher), logs the switch once, counts it (``outages`` and
``fallbacks``), and tries Redis again every ``retry_after`` until it answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.ratelimit.local import LocalRateLimiter

log = logging.getLogger("scheduler.ratelimit")

DEFAULT_PREFIX = "scheduler:ratelimit"

# KEYS: the bucket. ARGV: capacity, tokens per second. Returns the wait in seconds and the
# tokens left, as text "<wait> <tokens>" (Redis would truncate a Lua number to an integer).
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens),
           'at', string.format('%.6f', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return string.format('%.9f %.9f', wait, tokens)
"""

# KEYS: the bucket. ARGV: capacity, tokens per second. Returns the tokens it holds now, as text.
_PEEK = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  return string.format('%.9f', capacity)
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
end
return string.format('%.9f', tokens)
"""


class RedisRateLimiter:
    """The shared ``RateLimiter``; an async context manager (it holds a connection pool)."""

    def __init__(
        self,
        *,
        url: str,
        password: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        fallback: LocalRateLimiter | None = None,
        timeout: float = 0.5,
        retry_after: timedelta = timedelta(seconds=2),
        on_unavailable: Callable[[], None] | None = None,
    ) -> None:
        """``on_unavailable`` is told of every failed attempt to reach Redis (for metrics)."""
        self.prefix = prefix
        self._on_unavailable = on_unavailable
        self._fallback = fallback if fallback is not None else LocalRateLimiter()
        self._retry_after = retry_after.total_seconds()
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=0),
        )
        self._take: Any = self._client.register_script(_TAKE)
        self._peek: Any = self._client.register_script(_PEEK)
        self._down_until: float | None = None
        #: Times Redis became unreachable, and acquisitions answered locally meanwhile.
        self.outages = 0
        self.fallbacks = 0

    @property
    def degraded(self) -> bool:
        return self._down_until is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def acquire(self, key: str, limit: RateLimit, *, now: datetime) -> timedelta:
        return (await self.acquire_counted(key, limit, now=now))[0]

    async def acquire_counted(
        self, key: str, limit: RateLimit, *, now: datetime
    ) -> tuple[timedelta, float]:
        if self._down_until is not None and time.monotonic() < self._down_until:
            return self._local(key, limit, now)
        try:
            answer = await self._take(
                keys=[self.key(key)], args=[limit.capacity, repr(limit.per_second)]
            )
        except (RedisError, OSError) as error:
            if self._down_until is None:
                self.outages += 1
                log.warning(
                    "Redis unreachable for rate limits (%s: %s); using in-process buckets",
                    type(error).__name__,
                    error,
                )
            self._down_until = time.monotonic() + self._retry_after
            if self._on_unavailable is not None:
                self._on_unavailable()
            return self._local(key, limit, now)
        if self._down_until is not None:
            log.warning("Redis reachable again; rate limits are shared again")
            self._down_until = None
        wait, tokens = answer.split()
        return timedelta(seconds=float(wait)), float(tokens)

    async def tokens(self, key: str, limit: RateLimit, *, now: datetime) -> float:
        """The shared bucket's tokens (the local one's while Redis is down)."""
        if self._down_until is not None and time.monotonic() < self._down_until:
            return await self._fallback.tokens(key, limit, now=now)
        try:
            answer = await self._peek(
                keys=[self.key(key)], args=[limit.capacity, repr(limit.per_second)]
            )
        except (RedisError, OSError):
            return await self._fallback.tokens(key, limit, now=now)
        return float(answer)

    def _local(self, key: str, limit: RateLimit, now: datetime) -> tuple[timedelta, float]:
        self.fallbacks += 1
        return self._fallback.take(key, limit, now=now)
