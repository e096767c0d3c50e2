"""Following the event log: one watcher per process notices that the log grew, and every
follower (an SSE connection) then reads its own filtered page with its own cursor.

The watcher reads only the log's head (one indexed row) every ``poll_seconds``, and at once
when ``nudge`` is called (by ``listen``'s notifications, when given one, or by an in-process
writer). No database notification is used by default: PostgreSQL's ``NOTIFY`` serialises the
commits of every transaction that sends one (docs/events.md). After a nudge that moved nothing
the head is looked at again a few times shortly after, since on PostgreSQL an older
transaction still in flight may hold the new entries back for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from scheduler_application.accounts.access import Principal
from scheduler_application.errors import AuthenticationFailed, NotFound, PermissionDenied
from scheduler_application.events.log import EventService
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.events import LOG_START, EventCursor, LoggedEvent
from scheduler_domain.status import RunStatus

log = logging.getLogger("scheduler.events")

#: Given the callback to call on every change notification; returns (or raises) when its
#: connection is lost, and is then called again after a pause.
Listen = Callable[[Callable[[], None]], Awaitable[None]]

_RECHECKS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


class LogWatcher:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        poll_seconds: float = 1.0,
        listen: Listen | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._poll = poll_seconds
        self._listen = listen
        self._changed = asyncio.Condition()
        self._nudged = asyncio.Event()
        self._head = LOG_START
        self._tasks: list[asyncio.Task[None]] = []
        self.generation = 0

    def nudge(self) -> None:
        """The log may have grown: look at once (safe to call from the loop's callbacks)."""
        self._nudged.set()

    def _ensure_running(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._watch(), name="event-log-watcher"))
        if self._listen is not None:
            self._tasks.append(asyncio.create_task(self._keep_listening(), name="event-listen"))

    async def wait(self, generation: int, timeout: float) -> bool:
        """Until the log moved past ``generation`` (True) or ``timeout`` passed (False)."""
        self._ensure_running()
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.generation != generation), timeout
                )
            except TimeoutError:
                return False
        return True

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read_head(self) -> bool:
        async with self._uow_factory() as uow:
            head = await uow.events.log_head()
        if head == self._head:
            return False
        self._head = head
        async with self._changed:
            self.generation += 1
            self._changed.notify_all()
        return True

    async def _watch(self) -> None:
        while True:
            nudged = False
            try:
                await asyncio.wait_for(self._nudged.wait(), self._poll)
                nudged = True
            except TimeoutError:
                pass
            self._nudged.clear()
            try:
                moved = await self._read_head()
                if nudged and not moved:
                    for delay in _RECHECKS:
                        await asyncio.sleep(delay)
                        if await self._read_head() or self._nudged.is_set():
                            break
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage: followers wait for the next look
                log.warning("could not read the event log's head: %s", error)
                await asyncio.sleep(self._poll)

    async def _keep_listening(self) -> None:
        assert self._listen is not None
        backoff = 0.5
        while True:
            try:
                await self._listen(self.nudge)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("event notifications lost (%s); polling meanwhile", error)
            await asyncio.sleep(backoff * (1 + random.random()))  # noqa: S311 - jitter
            backoff = min(backoff * 2, 30.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Nothing happened for a while: SSE sends a comment line so proxies keep the stream."""


async def follow(
    events: EventService,
    watcher: LogWatcher,
    *,
    principal: Principal,
    after: EventCursor,
    task_id: str | None = None,
    run_id: str | None = None,
    statuses: Sequence[RunStatus] = (),
    kinds: Sequence[str] = (),
    heartbeat_seconds: float = 15.0,
    page: int = 200,
    first: list[LoggedEvent] | None = None,
    max_seconds: float | None = None,
    reauthenticate: Callable[[], Awaitable[Principal]] | None = None,
) -> AsyncIterator[LoggedEvent | Heartbeat]:
    """The caller's events after ``after``, then each new one as it is committed, until
    ``max_seconds`` have passed (then it ends: the client reconnects after its last event,
    and its credentials are checked again); a :class:`Heartbeat` whenever
    ``heartbeat_seconds`` pass without an event. ``first``: a page already read (the caller
    read it to refuse bad filters before answering). ``reauthenticate``: who the caller is
    now, asked before each read (from the credential cache, so cheap): a membership or role
    change counts from the next event on, and a credential that ends ends the stream."""
    loop = asyncio.get_running_loop()
    cursor = after
    pending = first
    quiet_since = loop.time()
    ends = None if max_seconds is None else loop.time() + max_seconds
    while ends is None or loop.time() < ends:
        generation = watcher.generation
        if pending is None:
            if reauthenticate is not None:
                try:
                    principal = await reauthenticate()
                except AuthenticationFailed:
                    return
            try:
                pending = await events.read(
                    principal=principal,
                    after=cursor,
                    task_id=task_id,
                    run_id=run_id,
                    statuses=statuses,
                    kinds=kinds,
                    limit=page,
                )
            except (NotFound, PermissionDenied):
                return  # the task or run followed is no longer the caller's to see
        batch, pending = pending, None
        for event in batch:
            yield event
            cursor = event.cursor
        if batch:
            quiet_since = loop.time()
        if len(batch) == page:
            continue
        left = heartbeat_seconds - (loop.time() - quiet_since)
        if ends is not None:
            left = min(left, ends - loop.time())
        if left <= 0 or not await watcher.wait(generation, left):
            if ends is not None and loop.time() >= ends:
                return
            yield Heartbeat()
            quiet_since = loop.time()
