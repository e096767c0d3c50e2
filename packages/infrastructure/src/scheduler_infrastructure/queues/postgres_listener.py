"""``LISTEN`` on one dedicated connection, kept open across server restarts and disconnects.

The queue only uses notifications to wake consumers early; they poll anyway, so while the
listener reconnects nothing is lost but latency. After every (re)connect ``on_connect`` runs,
since notifications sent while the connection was down are gone. The connection may also
``beat`` (a statement of the caller's, right after each connect and every ``beat_seconds``),
which then serves as its ping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from scheduler_infrastructure.queues.consumer import wait_at_most

log = logging.getLogger("scheduler.queues.postgres")

#: How often an idle listening connection is pinged: a half-open socket only shows when used.
PING_SECONDS = 15.0


def connect_arguments(url: URL, *, dsn: str | None, application_name: str) -> dict[str, Any]:
    """``asyncpg.connect`` arguments for the engine's database (or for ``dsn``)."""
    # The connection commits nothing that must survive a crash (at most a beat).
    settings = {"application_name": application_name, "synchronous_commit": "off"}
    if dsn is not None:
        return {"dsn": dsn, "server_settings": settings}
    arguments = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "database": url.database,
    }
    found = {key: value for key, value in arguments.items() if value is not None}
    return {**found, "server_settings": settings}


class NotificationListener:
    def __init__(
        self,
        *,
        arguments: dict[str, Any],
        channel: str,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
        beat: Callable[[Any], Awaitable[None]] | None = None,
        beat_seconds: float = PING_SECONDS,
    ) -> None:
        """``beat``: run with the connection after each connect and every ``beat_seconds``;
        its exception ends the connection (the listener connects again) only when the
        connection is closed, so ``beat`` should handle the others."""
        self._arguments = arguments
        self._beat = beat
        self._beat_seconds = beat_seconds
        self._channel = channel
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self.listening = False

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notify(payload)

    async def _listen_forever(self) -> None:
        delay = 0.1
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(**self._arguments, timeout=10)
                await self._listen_until_lost(connection)
                delay = 0.1
                log.warning("queue listener lost its connection; polling meanwhile")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("queue listener cannot listen (%s); polling meanwhile", error)
            finally:
                self.listening = False
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen_until_lost(self, connection: Any) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(self._channel, self._notified)
        self.listening = True
        self._on_connect()
        if self._beat is not None:
            await self._beat(connection)
        while not lost.is_set():
            if await wait_at_most(lost, self._beat_seconds):
                break
            if self._beat is not None:
                await self._beat(connection)
            else:
                await connection.execute("SELECT 1", timeout=10)
