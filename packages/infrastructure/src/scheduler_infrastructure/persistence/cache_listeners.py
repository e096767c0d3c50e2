"""Keep a process's :class:`~scheduler_application.live_cache.LiveCache` told of the changes
other processes commit, through PostgreSQL ``LISTEN``: the cache serves only while the
subscription is live (``reset`` right after subscribing, since changes may have been missed),
and is suspended — nothing served from memory — from the moment the connection is lost until the
next subscription. What a notification means is the caller's: any notification forgets
everything (``by_key=False``), or its payload names the one key to forget (``by_key=True``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.live_cache import LiveCache
from scheduler_infrastructure.persistence.task_changes import TaskChangeListener

log = logging.getLogger("scheduler.cache_listeners")


async def keep_told(
    engine: AsyncEngine,
    cache: LiveCache[Any],
    *,
    channel: str,
    by_key: bool,
    unheard: str,
    retry_seconds: float = 1.0,
    ping_seconds: float = 5.0,
) -> None:
    """Until cancelled. ``unheard``: what the warning says the process does meanwhile.
    ``ping_seconds``: how often an idle subscription checks its connection (a dead one is
    found within that; the cache's time to live covers the rest)."""
    listener = TaskChangeListener(engine, channel=channel, ping_seconds=ping_seconds)

    def changed(key: str) -> None:
        cache.forget((key,))

    while True:
        try:
            await listener.listen(cache.reset, on_payload=changed if by_key else None)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the connection is gone; try again after a pause
            log.warning(
                "not hearing %s (%s: %s); %s", channel, type(error).__name__, error, unheard
            )
        finally:
            cache.suspend()
        await asyncio.sleep(retry_seconds)
