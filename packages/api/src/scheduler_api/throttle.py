"""Login throttling, per account and per client address, in this process's memory.

An account is locked for a while after too many failed logins (whoever sent them); an address is
limited in how many attempts it may make per window (successful ones count too). The other
unauthenticated auth endpoints (refresh, logout) count against the same per-address allowance
(:meth:`LoginThrottle.check_address`). Both answer 429
with ``Retry-After``. State is per process: with several API replicas an attacker gets each
replica's allowance, which still bounds guessing to a handful of passwords a minute.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

MAX_TRACKED_KEYS = 100_000


class Throttled(Exception):
    """Too many attempts; ``retry_after`` seconds until the next one is accepted."""

    def __init__(self, retry_after: int, *, scope: str) -> None:
        super().__init__(f"too many auth attempts for this {scope}; retry in {retry_after} s")
        self.retry_after = retry_after
        self.scope = scope


@dataclass(frozen=True, slots=True)
class Allowance:
    attempts: int
    window: timedelta


#: Failed logins per account before it is locked until the oldest failure leaves the window.
ACCOUNT_ALLOWANCE = Allowance(5, timedelta(minutes=15))
#: Login attempts per client address.
ADDRESS_ALLOWANCE = Allowance(30, timedelta(minutes=1))


class _Windows:
    """Sliding windows of event times per key, forgetting the least recently used keys."""

    def __init__(self, allowance: Allowance) -> None:
        self._allowance = allowance
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may act again (0 when it may now)."""
        events = self._prune(key, now)
        if events is None or len(events) < self._allowance.attempts:
            return 0.0
        return events[0] + self._allowance.window.total_seconds() - now

    def record(self, key: str, now: float) -> None:
        events = self._prune(key, now)
        if events is None:
            events = self._events[key] = deque()
            while len(self._events) > MAX_TRACKED_KEYS:
                self._events.popitem(last=False)
        self._events.move_to_end(key)
        events.append(now)

    def forget(self, key: str) -> None:
        self._events.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = now - self._allowance.window.total_seconds()
        while events and events[0] <= horizon:
            events.popleft()
        return events


class LoginThrottle:
    def __init__(
        self,
        *,
        per_account: Allowance | None = None,
        per_address: Allowance | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accounts = _Windows(per_account or ACCOUNT_ALLOWANCE)
        self._addresses = _Windows(per_address or ADDRESS_ALLOWANCE)
        self._now = monotonic

    def check(self, username: str, address: str) -> None:
        """Count an attempt from ``address``; raise :class:`Throttled` if it must wait."""
        now = self._now()
        account_wait = self._accounts.wait(_account_key(username), now)
        if account_wait > 0:
            raise Throttled(math.ceil(account_wait), scope="account")
        address_wait = self._addresses.wait(address, now)
        if address_wait > 0:
            raise Throttled(math.ceil(address_wait), scope="address")
        self._addresses.record(address, now)

    def check_address(self, address: str) -> None:
        """Count an unauthenticated request from ``address`` (refresh, logout); raise
        :class:`Throttled` if it must wait."""
        now = self._now()
        address_wait = self._addresses.wait(address, now)
        if address_wait > 0:
            raise Throttled(math.ceil(address_wait), scope="address")
        self._addresses.record(address, now)

    def failed(self, username: str) -> None:
        self._accounts.record(_account_key(username), self._now())

    def succeeded(self, username: str) -> None:
        self._accounts.forget(_account_key(username))


def _account_key(username: str) -> str:
    return username.strip().lower()[:256]
