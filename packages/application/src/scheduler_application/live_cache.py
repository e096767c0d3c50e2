"""What a process read from the database, kept while it cannot have changed unheard.

:class:`LiveCache` is the machinery the caches of accepted credentials
(:mod:`~scheduler_application.accounts.principal_cache`) and of tasks
(:mod:`~scheduler_application.tasks.read_cache`) share: a bounded LRU whose entries are served
until the earliest of their time to live and the next invalidation, and not at all while the
cache is suspended (its process cannot hear of changes). A read that missed stores its answer
only if no invalidation happened while it read (:attr:`epoch`), so a read that raced a change
cannot bring back what the change replaced. The subclasses say what a key and a value are.

Concurrent misses of one key share one read (:meth:`shared`): when an entry ends (its time to
live, an invalidation) under load, or a process starts, the requests that all wanted it wait for
one trip to the database instead of making one each. Only those that missed in the same epoch
share: a caller arriving after an invalidation never takes the answer of a read that began
before it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar, cast

V = TypeVar("V")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    #: ``monotonic()`` after which the entry is stale.
    stale_at: float


class LiveCache(Generic[V]):
    #: What a subclass holds by default.
    DEFAULT_MAX_ENTRIES = 10_000
    DEFAULT_TTL = timedelta(seconds=5)

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        ttl: timedelta | None = None,
        live: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_entries`` or ``ttl`` of 0 turns caching off (None: the class's default).
        ``live=False`` starts suspended (until :meth:`reset`): for a process that must first
        subscribe to invalidations."""
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        chosen_ttl = self.DEFAULT_TTL if ttl is None else ttl
        self._max_entries = max(0, self.DEFAULT_MAX_ENTRIES if max_entries is None else max_entries)
        self._ttl = max(0.0, chosen_ttl.total_seconds())
        self._live = live
        self._now = monotonic
        self._epoch = 0
        #: Reads under way, by (key, epoch): see :meth:`shared`.
        self._flights: dict[tuple[str, int], asyncio.Future[object]] = {}
        #: Answers served from memory, for tests.
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self._live and self._max_entries > 0 and self._ttl > 0

    @property
    def epoch(self) -> int:
        """Take it before reading the database; hand it to the subclass's ``put``."""
        return self._epoch

    def __len__(self) -> int:
        return len(self._entries)

    def _lookup(self, key: str) -> V | None:
        """The live value under ``key`` (None: none, stale or suspended); not counted as a
        hit, since the subclass may still refuse it."""
        if not self._live:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.stale_at <= self._now():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def _store(self, key: str, value: V, *, epoch: int) -> None:
        """Remember ``value``, unless an invalidation happened since ``epoch``."""
        if not self.enabled or epoch != self._epoch:
            return
        self._entries[key] = _Entry(value, self._now() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def shared(self, key: str, read: Callable[[], Awaitable[R]]) -> R:
        """``await read()``, unless a caller that missed ``key`` in this same epoch is already
        reading it: then its answer (or its error). The read runs in a task of its own, so a
        caller that goes away (a request cancelled) does not fail the others. While the cache
        is off or suspended every caller reads on its own: with no invalidations to go by, an
        answer read a moment before a caller came could predate a change it must see."""
        if not self.enabled:
            return await read()
        flight_key = (key, self._epoch)
        flight = self._flights.get(flight_key)
        if flight is not None:
            return await asyncio.shield(cast("asyncio.Future[R]", flight))
        started = asyncio.ensure_future(read())
        self._flights[flight_key] = landing = cast("asyncio.Future[object]", started)
        landing.add_done_callback(self._landed(flight_key))
        return await asyncio.shield(started)

    def _landed(self, flight_key: tuple[str, int]) -> Callable[[asyncio.Future[object]], None]:
        def landed(flight: asyncio.Future[object]) -> None:
            if self._flights.get(flight_key) is flight:
                del self._flights[flight_key]
            # Every caller may have gone: the error is theirs, not the loop's to report.
            if not flight.cancelled():
                flight.exception()

        return landed

    def _drop(self, key: str) -> None:
        """Drop one entry that ended on its own (no invalidation)."""
        self._entries.pop(key, None)

    def forget(self, keys: Iterable[str]) -> None:
        """These changed (or are gone): drop them, and refuse the reads in flight."""
        self._epoch += 1
        for key in keys:
            self._entries.pop(key, None)

    def invalidate(self) -> None:
        """Forget everything (and refuse the reads in flight)."""
        self._epoch += 1
        self._entries.clear()

    def suspend(self) -> None:
        """Forget everything and serve nothing: invalidations may be missed from now on."""
        self._live = False
        self.invalidate()

    def reset(self) -> None:
        """Forget everything and serve again: invalidations are heard from now on."""
        self._live = True
        self.invalidate()
