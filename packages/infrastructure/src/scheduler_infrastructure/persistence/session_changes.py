"""PostgreSQL ``LISTEN scheduler_sessions``: hear when any process changes a credential's
standing (migration 0011's triggers on ``users`` and ``api_keys``), so the API's cache of
accepted credentials is invalidated in every process at the other's commit.

:func:`keep_listening` runs for as long as the API serves: the cache serves only while the
subscription is live (``reset`` right after subscribing, since changes may have been missed,
and on every notification), and is suspended — nothing served from memory — from the moment
the connection is lost until the next subscription.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.accounts.principal_cache import PrincipalCache
from scheduler_infrastructure.persistence.task_changes import TaskChangeListener

log = logging.getLogger("scheduler.sessions")

CHANNEL = "scheduler_sessions"


async def keep_listening(
    engine: AsyncEngine,
    cache: PrincipalCache,
    *,
    retry_seconds: float = 1.0,
    ping_seconds: float = 5.0,
) -> None:
    """Until cancelled. ``ping_seconds``: how often an idle subscription checks its
    connection (a dead one is found within that; the cache's time to live covers the rest)."""
    listener = TaskChangeListener(engine, channel=CHANNEL, ping_seconds=ping_seconds)
    while True:
        try:
            await listener.listen(cache.reset)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the connection is gone; try again after a pause
            log.warning(
                "not hearing session changes (%s: %s); authenticating from the database",
                type(error).__name__,
                error,
            )
        finally:
            cache.suspend()
        await asyncio.sleep(retry_seconds)
