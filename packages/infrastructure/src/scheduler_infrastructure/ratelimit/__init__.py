"""Token buckets for the :class:`~scheduler_application.ports.coordination.RateLimiter` port:
shared in Redis when configured, in-process otherwise (and while Redis is unreachable)."""

from scheduler_infrastructure.ratelimit.local import LocalRateLimiter
from scheduler_infrastructure.ratelimit.redis import RedisRateLimiter

__all__ = ["LocalRateLimiter", "RedisRateLimiter"]
