"""Retrying calls that fail because a backing service is down, with capped backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from scheduler_application.errors import ApplicationError, Contended, Unavailable
from scheduler_domain.errors import DomainError

T = TypeVar("T")
logger = logging.getLogger("scheduler.worker")


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying: outages and lost races (:class:`Contended`: nothing written),
    not answers. A Conflict or NotFound is an answer."""
    if isinstance(error, Unavailable | Contended):
        return True
    return not isinstance(error, ApplicationError | DomainError)


async def retry_until(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event | None = None,
    attempts: int | None = None,
    first_delay: float = 0.2,
    max_delay: float = 5.0,
) -> T | None:
    """Call until it succeeds. Transient errors are logged and retried with backoff; other
    errors propagate. Returns None if ``stop`` is set or ``attempts`` run out."""
    delay = first_delay
    tried = 0
    while True:
        try:
            return await call()
        except Exception as error:
            if not is_transient(error):
                raise
            tried += 1
            if attempts is not None and tried >= attempts:
                logger.error("giving up trying to %s after %d attempts: %s", what, tried, error)
                return None
            logger.warning("cannot %s (%s); retrying in %.1f s", what, _describe(error), delay)
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                return None
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:300]
