"""PostgreSQL ``LISTEN scheduler_tasks``: wake the scheduler when any process changes a task.

The notifications come from a trigger on ``tasks`` (migration 0003): on every insert and every
update that moves ``version`` (user edits, pause, resume), sent when the writing transaction
commits, whichever process wrote it. :meth:`TaskChangeListener.listen` holds one pooled
connection while it listens and returns (or raises) when that connection is lost; the caller
runs it again with backoff. It calls ``on_change`` once right after subscribing too, since
changes may have been missed while it was not listening.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("scheduler.task_changes")

CHANNEL = "scheduler_tasks"


class TaskChangeListener:
    def __init__(
        self, engine: AsyncEngine, *, channel: str = CHANNEL, ping_seconds: float = 30.0
    ) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("task change notifications need PostgreSQL")
        self._engine = engine
        self._channel = channel
        self._ping_seconds = ping_seconds
        self.notifications = 0

    async def listen(
        self,
        on_change: Callable[[], None],
        *,
        on_payload: Callable[[str], None] | None = None,
    ) -> None:
        """Listen until the connection is lost (then raise ConnectionError) or cancelled.
        ``on_payload``, when given, receives each notification's payload instead of
        ``on_change`` (which is still called once right after subscribing)."""
        lost = asyncio.Event()

        def notified(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
            self.notifications += 1
            if on_payload is None:
                on_change()
            else:
                on_payload(payload)

        def terminated(*_args: Any) -> None:
            lost.set()

        async with self._engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.add_listener(self._channel, notified)
            raw.add_termination_listener(terminated)
            try:
                on_change()
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=self._ping_seconds)
                    except TimeoutError:
                        await connection.execute(text("SELECT 1"))
                        await connection.rollback()
                raise ConnectionError("the task change listener lost its connection")
            finally:
                raw.remove_termination_listener(terminated)
                if not raw.is_closed():
                    try:
                        await raw.remove_listener(self._channel, notified)
                    except Exception as error:  # the connection is going back or away anyway
                        log.debug("could not unlisten: %s", error)
