"""PostgreSQL ``LISTEN scheduler_task_rows``: keep the API's cache of tasks told of every change
to a task's row (migration 0019's triggers: any update that changes the row, any delete; the
payload is the task's id), whichever process made it.

:func:`keep_forgetting` runs for as long as the API serves: the cache serves only while the
subscription is live (``reset`` right after subscribing, since changes may have been missed),
forgets each task it hears of, and is suspended — every read goes to the database — from the
moment the connection is lost until the next subscription.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_application.tasks.read_cache import TaskCache
from scheduler_infrastructure.persistence.task_changes import TaskChangeListener

log = logging.getLogger("scheduler.task_rows")

CHANNEL = "scheduler_task_rows"


async def keep_forgetting(
    engine: AsyncEngine,
    cache: TaskCache,
    *,
    retry_seconds: float = 1.0,
    ping_seconds: float = 5.0,
) -> None:
    """Until cancelled. ``ping_seconds``: how often an idle subscription checks its
    connection (a dead one is found within that; the cache's time to live covers the rest)."""
    listener = TaskChangeListener(engine, channel=CHANNEL, ping_seconds=ping_seconds)

    def changed(task_id: str) -> None:
        cache.forget((task_id,))

    while True:
        try:
            await listener.listen(cache.reset, on_payload=changed)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the connection is gone; try again after a pause
            log.warning(
                "not hearing task changes (%s: %s); reading tasks from the database",
                type(error).__name__,
                error,
            )
        finally:
            cache.suspend()
        await asyncio.sleep(retry_seconds)
