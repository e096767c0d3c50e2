"""Who a credential is, remembered for a few seconds: authentication without the database.

:class:`PrincipalCache` maps the SHA-256 of a credential that was *accepted* (an access token
or an API key; a refused one is never stored) to the :class:`Principal` it proved, in a bounded
LRU. An entry is served until the earliest of: its time to live, the credential's own expiry
(the token's ``exp``, the key's ``expires_at``), and the next invalidation.

Invalidation is what makes it safe. The session rules — a new token generation (logout,
password change or reset, disabling, role change) and an API key's revocation — call
:meth:`invalidate` in the process that made the change once it is committed, so that process
refuses the credential on its very next request; every other process hears of the change from
the database (PostgreSQL ``NOTIFY``, sent at commit by a trigger) and invalidates too. While a
process cannot hear those notifications it must not serve from the cache at all
(:meth:`suspend`, until :meth:`reset`). The time to live bounds what a lost notification or a
database without notifications (SQLite written by another process) can cost.

A lookup that missed and went to the database stores its answer only if no invalidation
happened meanwhile (:meth:`epoch`), so a read that raced a revocation cannot bring the revoked
credential back.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler_application.accounts.access import Principal

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_TTL = timedelta(seconds=5)


def credential_digest(credential: str) -> str:
    """The cache key of a credential (never the credential itself)."""
    return hashlib.sha256(credential.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    #: ``monotonic()`` after which the entry is stale.
    stale_at: float
    #: The credential's own expiry (None: none).
    expires_at: datetime | None


class PrincipalCache:
    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl: timedelta = DEFAULT_TTL,
        live: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_entries`` or ``ttl`` of 0 turns caching off. ``live=False`` starts suspended
        (until :meth:`reset`): for a process that must first subscribe to invalidations."""
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max(0, max_entries)
        self._ttl = max(0.0, ttl.total_seconds())
        self._live = live
        self._now = monotonic
        self._epoch = 0
        #: Hits, for tests.
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self._live and self._max_entries > 0 and self._ttl > 0

    @property
    def epoch(self) -> int:
        """Take it before reading the database; hand it to :meth:`put`."""
        return self._epoch

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str, *, now: datetime) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or not self._live:
            return None
        if entry.stale_at <= self._now() or (
            entry.expires_at is not None and entry.expires_at <= now
        ):
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        return entry.principal

    def put(
        self, digest: str, principal: Principal, *, expires_at: datetime | None, epoch: int
    ) -> None:
        """Remember an accepted credential, unless an invalidation happened since ``epoch``."""
        if not self.enabled or epoch != self._epoch:
            return
        self._entries[digest] = _Entry(principal, self._now() + self._ttl, expires_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """Forget every credential: a session rule changed something (in this process or,
        told by the database, in another)."""
        self._epoch += 1
        self._entries.clear()

    def suspend(self) -> None:
        """Forget everything and serve nothing: invalidations may be missed from now on."""
        self._live = False
        self.invalidate()

    def reset(self) -> None:
        """Forget everything and serve again: invalidations are heard from now on."""
        self._live = True
        self.invalidate()
