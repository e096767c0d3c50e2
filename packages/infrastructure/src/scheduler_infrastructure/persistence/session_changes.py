"""PostgreSQL ``LISTEN scheduler_sessions``: hear when any process changes a credential's
standing (migration 0011's triggers on ``users`` and ``api_keys``), so the API's cache of
accepted credentials is invalidated in every process at the other's commit.

:func:`keep_listening` runs for as long as the API serves: the cache serves only while the
subscription is live (``reset`` right after subscribing, since changes may have been missed,
and on every notification), and is suspended — nothing served from memory — from the moment
the connection is lost until the next subscription.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_infrastructure.persistence.cache_listeners import keep_told

CHANNEL = "scheduler_sessions"


async def keep_listening(
    engine: AsyncEngine,
    cache: PrincipalCache,
    *,
    retry_seconds: float = 1.0,
    ping_seconds: float = 5.0,
) -> None:
    """Until cancelled (see :func:`.cache_listeners.keep_told`)."""
    await keep_told(
        engine,
        cache,
        channel=CHANNEL,
        by_key=False,
        unheard="authenticating from the database",
        retry_seconds=retry_seconds,
        ping_seconds=ping_seconds,
    )
