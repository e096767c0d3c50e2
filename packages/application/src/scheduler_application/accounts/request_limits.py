"""Request rate limits per principal: a token bucket per API key, or per user for access
tokens, sized by the caller's role.

Checked on every authenticated request after authentication (which is answered from memory
for known credentials), so the check is the only cost: an in-process bucket, or one Redis
script when the limiter is shared — never the database. A refused request is not queued: the
caller is told how long to wait (``Retry-After``) and what is left (the ``RateLimit-*``
fields).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler_application.accounts.access import Principal
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.coordination import CountingRateLimiter
from scheduler_domain.accounts import Role
from scheduler_domain.rate_limit import RateLimit

#: The bucket keys' prefix, apart from the run rate limits' keys in the same limiter.
KEY_PREFIX = "requests:"


@dataclass(frozen=True, slots=True)
class RequestQuota:
    """One request's answer, in whole numbers as the headers carry them."""

    allowed: bool
    #: The bucket's size: requests in a burst.
    limit: int
    #: Requests left right now.
    remaining: int
    #: Seconds until the bucket is full again.
    reset: int
    #: Seconds until a request will be accepted (0 when this one was).
    retry_after: int


class RequestsThrottled(Exception):
    """The principal used its request budget; ``quota`` says when to come back."""

    def __init__(self, quota: RequestQuota) -> None:
        super().__init__(
            f"too many requests: the budget of {quota.limit} is spent; retry in "
            f"{quota.retry_after} s"
        )
        self.quota = quota


class RequestLimits:
    def __init__(
        self,
        *,
        limiter: CountingRateLimiter,
        clock: Clock,
        limits: Mapping[Role | None, RateLimit],
    ) -> None:
        """``limits``: per role, with ``None`` for every role not named; a role with no
        limit (and no ``None`` entry) is not limited."""
        self._limiter = limiter
        self._clock = clock
        self._limits = dict(limits)

    @property
    def active(self) -> bool:
        return bool(self._limits)

    def limit_for(self, role: Role) -> RateLimit | None:
        return self._limits.get(role, self._limits.get(None))

    async def check(self, principal: Principal) -> RequestQuota | None:
        """Take one request from the principal's bucket: its quota (``allowed`` False when
        the budget is spent), or None when its role is not limited."""
        limit = self.limit_for(principal.role)
        if limit is None:
            return None
        wait, tokens = await self._limiter.acquire_counted(
            KEY_PREFIX + principal.credential, limit, now=self._clock.now()
        )
        seconds = wait.total_seconds()
        missing = max(float(limit.capacity) - tokens, 0.0)
        return RequestQuota(
            allowed=seconds <= 0,
            limit=limit.capacity,
            remaining=max(int(tokens), 0),
            reset=math.ceil(missing / limit.per_second),
            retry_after=max(math.ceil(seconds), 1) if seconds > 0 else 0,
        )
