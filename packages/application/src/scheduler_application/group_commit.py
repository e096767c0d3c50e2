"""Group commit: concurrent callers share one transaction (or one round trip).

Many callers each have one small thing to write: a worker's claims and outcomes (one task per
delivery), a queue's acks, the API's triggers (one request each). Sent one by one, each is a
transaction of its own. A :class:`GroupCommit` lets them share: an item submitted while no
flush is running is flushed at once (at light load nothing waits), and the items submitted
while a flush is in progress go together in the next one, so under load the groups grow with
the work waiting. Each caller still awaits the flush that carries its item and gets its own
answer (or its own error), so ``await submit()`` means what the single call meant: the item is
committed when it returns. A caller cancelled meanwhile leaves its item in the group (the
others' flush is not disturbed), so it may be written all the same.

At a moderate rate (items arriving one by one, a few milliseconds apart) a flush is usually
over before the next item comes, so each goes alone. A ``window`` lets such a flow share
flushes: a group waits up to one ``window`` for companions (or until ``max_batch`` of them are
there) before it is flushed — but only while the items come fast enough for a wait to be
likely to gather someone: the mean gap between submissions (a moving average) at most
:data:`GATHER_GAPS` windows, that is at least one companion per :data:`GATHER_GAPS` waits on
average. Slower than that, or idle, an item is flushed at once: a light load pays nothing,
and under a steady flow an item waits at most one window. ``window=0`` (the default) never
waits.

Callers that come back together — a fixed set of clients, each sending its next request as
soon as it has its answer — make a flow the window cannot follow: when a group of N is
answered, the first of the N to come back finds no flush running and goes alone, the others
arriving while it is written go next, and every other transaction carries one item (the
API's triggers under 16 clients: groups of 1 and 15 alternating). With ``follow_last`` a
group that starts right after a flush of several items waits for as many as that flush
carried, at most as long as it took (counted from its end, capped at :data:`MAX_WINDOW`) —
whether it starts the group commit again or follows with items that came meanwhile: the items
of a group come back as a group. After a flush of one item, or once that time has
passed, an item goes at once: a light load pays nothing, and an item waits no longer than a
flush that was under way when it came would have made it wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

#: A flush answers every item in order: a result, or the exception to raise for that item.
Flush = Callable[[list[I]], Awaitable[Sequence[R | BaseException]]]

#: The weight of the newest gap in the moving average of the gaps between submissions.
GAP_WEIGHT = 0.25

#: A group waits for companions while the mean gap between submissions is at most this many
#: windows (a wait then gathers at least a quarter of an item on average).
GATHER_GAPS = 4

#: The longest window accepted (seconds): a window is a few milliseconds, not a schedule.
MAX_WINDOW = 0.05


class GroupCommit(Generic[I, R]):
    """Flushes run in the context the group commit was created in (its log fields, say), not
    in that of whichever caller happened to start one: a group is about all of its items."""

    def __init__(
        self,
        flush: Flush[I, R],
        *,
        max_batch: int = 500,
        window: float = 0.0,
        follow_last: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``window`` (seconds, at most :data:`MAX_WINDOW`): how long a group of a steady flow
        waits for companions; ``follow_last``: a group right after a flush of several items
        waits for as many (see the module); ``clock``: monotonic seconds, for tests."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not 0 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be between 0 and {MAX_WINDOW} seconds")
        self._flush = flush
        self._max_batch = max_batch
        self._window = window
        self._clock = clock
        #: When the last item was submitted (monotonic seconds), and the moving average of
        #: the gaps between submissions (None until there is one).
        self._last_submit: float | None = None
        self._mean_gap: float | None = None
        self._follow_last = follow_last
        #: The last flush: its items, how long it took, when it ended (clock seconds).
        self._last_size = 0
        self._last_took = 0.0
        self._last_end: float | None = None
        #: How many pending items make a group full (``_full`` is set): ``max_batch``, or
        #: fewer while a group waits for as many items as the last flush carried.
        self._target = max_batch
        self._full = asyncio.Event()
        self._context = contextvars.copy_context()
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None
        #: Flushes done and items carried, for tests and metrics.
        self.flushes = 0
        self.items = 0
        #: Groups that waited a window for companions.
        self.waits = 0

    async def submit(self, item: I) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self._window > 0:
            self._note_arrival()
        self._pending.append((item, done))
        if len(self._pending) >= self._target:
            self._full.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), context=self._context)
        return await done

    def _note_arrival(self) -> None:
        now = self._clock()
        if self._last_submit is not None:
            # A gap longer than a second counts as one second: after a pause the average is
            # well above any window at once, and comes back down within a few items.
            gap = min(now - self._last_submit, 1.0)
            mean = self._mean_gap
            self._mean_gap = gap if mean is None else mean + GAP_WEIGHT * (gap - mean)
        self._last_submit = now

    async def _gather(self) -> None:
        """Wait for the last flush's number of items right after it (``follow_last``), else
        up to one window for companions while the items come fast enough."""
        if await self._follow():
            return
        mean = self._mean_gap
        if self._window <= 0 or mean is None or mean > self._window * GATHER_GAPS:
            return  # slow or idle: the item goes at once
        self._full.clear()
        if len(self._pending) >= self._max_batch:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), self._window)
        self.waits += 1

    async def _follow(self) -> bool:
        """With ``follow_last``, right after a flush of several items: wait until as many are
        pending, or until as long as that flush took has passed since it ended. True if the
        group waited (or had its items already)."""
        if not self._follow_last or self._last_end is None or self._last_size < 2:
            return False
        left = self._last_end + min(self._last_took, MAX_WINDOW) - self._clock()
        if left <= 0:
            return False  # a pause since: the last group says nothing about this one
        self._target = min(self._last_size, self._max_batch)
        try:
            if len(self._pending) < self._target:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), left)
                self.waits += 1
        finally:
            self._target = self._max_batch
        return True

    async def _run(self) -> None:
        await self._gather()
        following = False
        while self._pending:
            if following:
                # Items came while the last group was written: they go next, with as many as
                # that group had when they come back in time (``follow_last``).
                await self._follow()
            following = True
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self.flushes += 1
            self.items += len(batch)
            started = self._clock()
            try:
                try:
                    answers = await self._flush([item for item, _ in batch])
                finally:
                    ended = self._clock()
                    # The callers around this flush: its items, and those that came while it
                    # was written (they come back together).
                    self._last_size = len(batch) + len(self._pending)
                    self._last_took, self._last_end = ended - started, ended
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers for {len(batch)} items")
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            except Exception as error:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            for (_, done), answer in zip(batch, answers, strict=True):
                if done.done():
                    continue  # its caller was cancelled meanwhile
                if isinstance(answer, BaseException):
                    done.set_exception(answer)
                else:
                    done.set_result(answer)

    async def aclose(self) -> None:
        """Wait for the flushes already under way."""
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)


def answer_alike(flush: Callable[[list[I]], Awaitable[None]]) -> Flush[I, None]:
    """A flush whose items share its fate (acks sent together): every item answered None, or
    every caller given the flush's error."""

    async def flushed(items: list[I]) -> Sequence[None]:
        await flush(items)
        return [None] * len(items)

    return flushed
