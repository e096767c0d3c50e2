"""PostgreSQL ``LISTEN scheduler_task_rows``: keep the API's cache of tasks told of every change
to a task's row (migration 0019's triggers: any update that changes the row, any delete; the
payload is the task's id), whichever process made it.

:func:`keep_forgetting` runs for as long as the API serves: the cache serves only while the
subscription is live (``reset`` right after subscribing, since changes may have been missed),
forgets each task it hears of, and is suspended — every read goes to the database — from the
moment the connection is lost until the next subscription.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.tasks.read_cache import TaskCache
from scheduler_infrastructure.persistence.cache_listeners import keep_told

CHANNEL = "scheduler_task_rows"


async def keep_forgetting(
    engine: AsyncEngine,
    cache: TaskCache,
    *,
    retry_seconds: float = 1.0,
    ping_seconds: float = 5.0,
) -> None:
    """Until cancelled (see :func:`.cache_listeners.keep_told`)."""
    await keep_told(
        engine,
        cache,
        channel=CHANNEL,
        by_key=True,
        unheard="reading tasks from the database",
        retry_seconds=retry_seconds,
        ping_seconds=ping_seconds,
    )
