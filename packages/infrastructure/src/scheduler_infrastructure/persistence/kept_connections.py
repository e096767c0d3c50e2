"""Connections of autocommit units of work kept between them, instead of a pool round each.

A read or statement unit of work on PostgreSQL (autocommit: no transaction, nothing to roll
back) is one or two statements; checking its connection out of SQLAlchemy's pool and back in
costs about as much CPU as the statements themselves (a third of ``GET /runs/{id}`` in
process: ``scripts/bench_asgi.py``). A :class:`ConnectionShelf` keeps a few such connections
checked out, and the next unit of work of the same kind takes one from it with no pool round.

What keeps it safe:

- Only a unit of work that ends cleanly puts its connection back: one left by an exception
  (a cancellation included: the connection may be mid-statement) goes back to the pool, which
  resets it as it always did. A connection still in a SQLAlchemy transaction is rolled back
  first (a no-op on the server: it is in autocommit).
- A connection is handed out only if the server has not closed it (asyncpg has seen the end of
  its socket: a restart, ``pg_terminate_backend``) — the check the engine makes at checkout
  (:func:`.engine.server_closed`); a closed one is dropped.
- Few are kept: at most ``keep`` per kind, at most a fifth of the pool's connections for the
  whole engine (:data:`POOL_SHARE`), and only while the pool could still serve another
  checkout at once — so that transactions, which always check out of the pool, keep most of
  it. Each is kept for at most ``max_age`` seconds from its first keeping (then the pool has it
  back, and its ``pool_recycle`` applies as before).
- Only the processes that open their resources with :func:`~scheduler_infrastructure.
  resources.open_resources` keep connections (:func:`keep_connections`), and they give every
  kept one back before the engine is disposed (:func:`release_kept_connections`). Any other
  engine's units of work use the pool as before. The postgres queue's consumers keep theirs on
  a shelf of their own engine, given back when the queue closes.

Nothing runs on a timer: a kept connection nobody takes stays checked out, idle, until the next
unit of work of its kind (which gives it back if it is too old) or the release; one the server
closed meanwhile is dropped then.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from scheduler_infrastructure.persistence.engine import server_closed

log = logging.getLogger("scheduler.persistence")

#: Connections kept per kind of unit of work (reads, statements) and per factory.
DEFAULT_KEEP = 4
#: Seconds a connection stays kept from its first keeping.
DEFAULT_MAX_AGE = 60.0
#: The share of the pool's connections an engine's shelves may keep, together.
POOL_SHARE = 5


class _Keeping:
    """An engine's shelves, and how many connections they may keep together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.shelves: list[ConnectionShelf] = []

    def kept(self) -> int:
        return sum(len(shelf) for shelf in self.shelves)


class ConnectionShelf:
    """The kept connections of one kind of unit of work (one engine's execution options)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        keeping: _Keeping | None = None,
        keep: int = DEFAULT_KEEP,
        max_age: float = DEFAULT_MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._keeping = keeping
        self._keep = keep
        self._max_age = max_age
        self._now = monotonic
        #: Last kept first (the warmest), with when each was first kept.
        self._free: list[tuple[AsyncConnection, float]] = []
        #: When each connection handed out was first kept (by identity).
        self._born: dict[int, float] = {}
        self._closed = False
        #: Units of work served from the shelf, for tests.
        self.reused = 0

    def __len__(self) -> int:
        return len(self._free)

    async def take(self) -> AsyncConnection:
        """A kept connection the server has not closed, else a new checkout of the engine."""
        while self._free:
            connection, born = self._free.pop()
            if _usable(connection) and self._now() - born < self._max_age:
                self._born[id(connection)] = born
                self.reused += 1
                return connection
            await _discard(connection)
        return await self._engine.connect()

    async def put(self, connection: AsyncConnection, *, clean: bool) -> None:
        """Keep ``connection`` (``clean``: its unit of work ended without an exception) or
        give it back to the pool."""
        born = self._born.pop(id(connection), self._now())
        if (
            not clean
            or self._closed
            or len(self._free) >= self._keep
            or (self._keeping is not None and self._keeping.kept() >= self._keeping.limit)
            or self._now() - born >= self._max_age
            or not _usable(connection)
            or not _pool_has_room(self._engine)
        ):
            await give_back(connection)
            return
        if connection.in_transaction():
            try:
                # SQLAlchemy's own bookkeeping: the server is in autocommit.
                await connection.rollback()
            except BaseException:
                await _discard(connection)
                raise
        self._free.append((connection, born))

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[AsyncConnection]:
        """A connection (:meth:`take`) for the block, put back if the block ran to its end
        (one an error or a cancellation interrupted goes to the pool, which resets it)."""
        connection = await self.take()
        clean = False
        try:
            yield connection
            clean = True
        finally:
            await self.put(connection, clean=clean)

    async def aclose(self) -> None:
        """Give every kept connection back to the pool; keep none from now on."""
        self._closed = True
        free, self._free = self._free, []
        for connection, _ in free:
            await give_back(connection)


def _usable(connection: AsyncConnection) -> bool:
    if connection.closed or connection.invalidated:
        return False
    sync = connection.sync_connection
    return sync is not None and not server_closed(sync.connection.dbapi_connection)


def _capacity(engine: AsyncEngine) -> int:
    """How many connections the engine's pool may have checked out at once (0: unknown)."""
    pool: Any = engine.sync_engine.pool
    size = getattr(pool, "size", None)
    if size is None:
        return 0
    return int(size()) + max(0, int(getattr(pool, "_max_overflow", 0)))


def _pool_has_room(engine: AsyncEngine) -> bool:
    """Whether the pool could serve one more checkout without waiting (this connection, kept,
    stays checked out)."""
    checked_out = getattr(engine.sync_engine.pool, "checkedout", None)
    return checked_out is not None and int(checked_out()) < _capacity(engine)


async def _discard(connection: AsyncConnection) -> None:
    """Give back a connection that may be dead: the pool invalidates it if closing fails."""
    try:
        await connection.close()
    except Exception:
        log.debug("a kept connection could not be closed cleanly", exc_info=True)


async def give_back(connection: AsyncConnection) -> None:
    """End what SQLAlchemy began on ``connection`` and return it to its pool."""
    try:
        if connection.in_transaction():
            await connection.rollback()
    finally:
        await connection.close()


#: The engines whose units of work keep connections (see :func:`keep_connections`), with the
#: shelves made for them.
_KEEPING: weakref.WeakKeyDictionary[Any, _Keeping] = weakref.WeakKeyDictionary()


def keep_connections(engine: AsyncEngine) -> None:
    """From now on the autocommit units of work of factories made on ``engine`` (PostgreSQL)
    keep their connections (:func:`release_kept_connections` before disposing of it)."""
    if engine.dialect.name == "postgresql" and engine.sync_engine not in _KEEPING:
        _KEEPING[engine.sync_engine] = _Keeping(limit=_capacity(engine) // POOL_SHARE)


def shelf_for(engine: AsyncEngine, kind: AsyncEngine) -> ConnectionShelf | None:
    """A shelf for the units of work on ``kind`` (``engine`` with their execution options) if
    ``engine`` keeps connections, else None."""
    keeping = _KEEPING.get(engine.sync_engine)
    if keeping is None or keeping.limit < 1:
        return None
    shelf = ConnectionShelf(kind, keeping=keeping)
    keeping.shelves.append(shelf)
    return shelf


async def release_kept_connections(engine: AsyncEngine) -> None:
    """Give the kept connections of ``engine`` back to its pool; keep none from now on."""
    keeping = _KEEPING.pop(engine.sync_engine, None)
    for shelf in keeping.shelves if keeping is not None else []:
        await shelf.aclose()
