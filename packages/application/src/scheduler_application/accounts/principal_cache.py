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
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler_application.accounts.access import Principal
from scheduler_application.live_cache import LiveCache

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_TTL = timedelta(seconds=5)


def credential_digest(credential: str) -> str:
    """The cache key of a credential (never the credential itself)."""
    return hashlib.sha256(credential.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Accepted:
    principal: Principal
    #: The credential's own expiry (None: none).
    expires_at: datetime | None


class PrincipalCache(LiveCache[_Accepted]):
    DEFAULT_MAX_ENTRIES = DEFAULT_MAX_ENTRIES
    DEFAULT_TTL = DEFAULT_TTL

    def get(self, digest: str, *, now: datetime) -> Principal | None:
        accepted = self._lookup(digest)
        if accepted is None:
            return None
        if accepted.expires_at is not None and accepted.expires_at <= now:
            self._drop(digest)
            return None
        self.hits += 1
        return accepted.principal

    def put(
        self, digest: str, principal: Principal, *, expires_at: datetime | None, epoch: int
    ) -> None:
        """Remember an accepted credential, unless an invalidation happened since ``epoch``."""
        self._store(digest, _Accepted(principal, expires_at), epoch=epoch)
