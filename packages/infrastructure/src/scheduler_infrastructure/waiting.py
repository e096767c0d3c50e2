"""Waiting for the database and the queue at start-up: retry what may pass, report the rest.

A server that is not up yet (connection refused, a timeout, "the database system is starting
up", too many connections) is worth waiting for, with backoff and a warning per attempt. A
server that answers with a refusal — a database that does not exist, a wrong password, an
unknown role — will answer the same in a minute: that is reported at once, in the server's own
words. A stop request (SIGTERM, SIGINT) ends the waiting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_infrastructure.errors import InfrastructureError

logger = logging.getLogger("scheduler.startup")

#: SQLSTATE classes and codes of a server that may accept the connection later: connection
#: exceptions, insufficient resources (too many connections), and the server starting up or
#: shutting down (``57P01``-``57P03``).
_TRANSIENT_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")


class DatabaseRefused(ConnectionError):
    """The database server answered and refused the connection: retrying will not help."""


class StartupInterrupted(InfrastructureError):
    """A stop request arrived while the process was still waiting for a service."""


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending.extend([getattr(current, "orig", None), current.__cause__, current.__context__])
    return seen


def _sqlstate(error: BaseException) -> str | None:
    for link in _chain(error):
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


#: Errors of the driver that lost track of a connection the server dropped in the middle of
#: an operation ("cannot switch to state 11; another operation is in progress", "connection
#: was closed in the middle of operation"): no answer of the server, so no refusal either.
_DROPPED = (asyncpg.exceptions.InternalClientError, asyncpg.exceptions.InterfaceError)


def is_transient(error: BaseException) -> bool:
    """Whether a failed connection attempt may succeed later."""
    state = _sqlstate(error)
    if state is not None:
        return state.startswith(_TRANSIENT_SQLSTATES)
    return any(isinstance(link, (OSError, TimeoutError, *_DROPPED)) for link in _chain(error))


def _server_message(error: BaseException) -> str:
    """The driver's own words (asyncpg: ``database "x" does not exist``), not SQLAlchemy's
    wrapping of them."""
    for link in _chain(error):
        if getattr(link, "sqlstate", None):
            return f"{type(link).__name__}: {link}"
    root = getattr(error, "orig", None) or error
    return f"{type(root).__name__}: {root}"


async def _pause(seconds: float, stop: asyncio.Event | None, what: str) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    if stop.is_set():
        raise StartupInterrupted(f"stopped while waiting for the {what}")


async def retry_until_ready(
    attempt: Callable[[], Awaitable[None]],
    *,
    what: str,
    timeout: float,
    stop: asyncio.Event | None = None,
    transient: Callable[[BaseException], bool] = lambda _error: True,
) -> None:
    """Call ``attempt`` until it succeeds, backing off up to 5 s between tries, for at most
    ``timeout`` seconds; an error ``transient`` rejects is raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.25
    while True:
        if stop is not None and stop.is_set():
            raise StartupInterrupted(f"stopped while waiting for the {what}")
        try:
            await attempt()
            return
        except Exception as error:
            if not transient(error):
                raise
            if loop.time() + delay > deadline:
                raise ConnectionError(
                    f"{what} unreachable after {timeout:.0f} s: {type(error).__name__}: {error}"
                ) from error
            logger.warning(
                "%s not reachable (%s: %s); retrying in %.1f s",
                what,
                type(error).__name__,
                error,
                delay,
            )
            await _pause(delay, stop, what)
            delay = min(delay * 2, 5.0)


async def wait_for_database(
    engine: AsyncEngine, *, timeout: float, stop: asyncio.Event | None = None
) -> None:
    """Block until the database answers, retrying transient failures with backoff; raise
    :class:`DatabaseRefused` with the server's message at once when it refuses."""

    async def attempt() -> None:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as error:
            if is_transient(error):
                raise
            raise DatabaseRefused(
                f"the database refused the connection: {_server_message(error)}"
            ) from error

    await retry_until_ready(
        attempt,
        what="database",
        timeout=timeout,
        stop=stop,
        transient=lambda error: not isinstance(error, DatabaseRefused),
    )
