"""Handing queued runs' messages to the queue: staged in the transaction, or published after it.

A message never names a run the database does not know: when the queue lives in the same
database (:class:`~scheduler_application.ports.queue.TransactionalRunQueue`, the postgres
backend) the messages are written in the transaction that queues their runs (:meth:`stage`)
and exist exactly when the runs do; for any other queue they are published after the commit.

A publish that fails is kept and tried again in the background (with backoff) until the queue
takes it, so a broker outage delays runs by about as long as it lasts; beyond
:data:`MAX_UNPUBLISHED` kept messages, or if this process stops, the runs are ``queued`` in the
database and :mod:`.recovery` publishes them again once stale. A message not to be delivered
yet (a run fired ahead of its slot: ``not_before``) is held and published at that instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime

from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import (
    RunInsertingQueue,
    RunMessage,
    RunQueue,
    TransactionalRunQueue,
)
from scheduler_application.ports.tracing import NO_TRACER, SpanKind, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun

logger = logging.getLogger("scheduler.relay")
#: Messages whose publish failed, kept for another try (beyond this, the oldest are left to
#: ``republish_stale_queued``).
MAX_UNPUBLISHED = 10_000
#: Kept messages sent per background try.
_RETRY_BATCH = 500


def run_message(run: TaskRun) -> RunMessage:
    """The queue message for a queued run: how to find and claim it, never its payload."""
    if run.queued_at is None:
        raise ValueError(f"run {run.id} has not been queued")
    return RunMessage(
        run_id=run.id,
        task_id=run.task_id,
        attempt=run.attempt,
        token=run.version,
        queue=run.queue,
        priority=run.priority,
        enqueued_at=run.queued_at,
        traceparent=run.traceparent,
        not_before=run.not_before,
    )


class Publisher:
    """One per process. ``stats`` (shared with the relay) counts
    ``republished_after_failure``."""

    def __init__(
        self, *, clock: Clock, queue: RunQueue, stats: Counter[str], tracer: Tracer = NO_TRACER
    ) -> None:
        self._clock = clock
        self.queue = queue
        #: The queue lives in the database: messages are written in the unit of work itself.
        self.in_database = queue if isinstance(queue, TransactionalRunQueue) else None
        #: ... and it can write new runs' messages in the statement inserting the runs.
        self.inserting = queue if isinstance(queue, RunInsertingQueue) else None
        self._stats = stats
        self._tracer = tracer
        #: Queued runs whose publish failed, by run id, until the queue takes them.
        self._unpublished: dict[str, RunMessage] = {}
        self._retrying: asyncio.Task[None] | None = None
        #: Publishes waiting for their messages' ``not_before`` (:meth:`_hold`).
        self._holding: dict[asyncio.Task[None], int] = {}
        #: First and longest wait between background tries of failed publishes, seconds.
        self.retry_delays = (0.2, 5.0)
        #: How long :meth:`publish_new` waits for the queue before leaving it to the background.
        self.publish_timeout = 1.0
        #: How long :meth:`aclose` waits for held messages' instants (runs fired ahead).
        self.hold_grace = 5.0

    async def stage(self, uow: UnitOfWork, messages: Sequence[RunMessage]) -> bool:
        """Write ``messages`` in ``uow``'s transaction if the queue lives in the database; False
        when they are to be published after the commit instead."""
        if not messages or self.in_database is None:
            return False
        with self._publish_spans(messages) as traced:
            return await self.in_database.publish_within(uow, traced)

    async def insert_with(
        self,
        uow: UnitOfWork,
        runs: Sequence[TaskRun],
        events: Sequence[RunEvent],
        messages: Sequence[RunMessage],
    ) -> set[str] | None:
        """Insert new ``runs`` (and ``events``) with the ``messages`` of those inserted, in one
        statement of ``uow``'s transaction, if the queue lives in the database and can; the
        ids inserted, or None when the caller is to insert the runs itself (and stage or
        publish their messages as usual)."""
        if not messages or self.inserting is None:
            return None
        with self._publish_spans(messages) as traced:
            return await self.inserting.insert_runs_within(uow, runs, events, traced)

    async def publish_new(self, messages: Sequence[RunMessage]) -> bool:
        """Publish the messages of runs a use case just committed; False when the queue did not
        take them at once. Never raises, and waits at most ``publish_timeout``: the runs are
        committed, and a publish that fails or hangs is tried again in the background — the
        caller (an API request) is not held up."""
        if not messages:
            return True
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self.publish(messages)
        except Exception as error:
            self._keep(messages)  # again, if cut off by the timeout: idempotent
            logger.warning(
                "publishing %d new runs failed (%s); retrying in the background",
                len(messages),
                "timed out" if isinstance(error, TimeoutError) else error,
            )
            return False
        return True

    async def publish(self, messages: Sequence[RunMessage]) -> None:
        """Publish after a commit; on failure keep the messages for the background retries
        and re-raise. Messages not to be delivered yet are held until their ``not_before``."""
        now = self._clock.now()
        later = [m for m in messages if m.not_before is not None and m.not_before > now]
        if later:
            self._hold(later)
            messages = [m for m in messages if m.not_before is None or m.not_before <= now]
            if not messages:
                return
        try:
            with self._publish_spans(messages) as traced:
                await self.queue.publish_many(traced)
        except Exception:
            self._keep(messages)
            raise

    @property
    def unpublished(self) -> int:
        """Messages waiting for another try at publishing."""
        return len(self._unpublished)

    @property
    def holding(self) -> int:
        """Messages held for their ``not_before`` (runs fired ahead of their slots)."""
        return sum(self._holding.values())

    async def aclose(self) -> None:
        """Stop retrying and holding: messages held for an instant within ``hold_grace`` are
        still published then (a graceful stop fired them ahead), the rest are dropped. What
        was still unpublished is left to ``republish_stale_queued`` (the runs are ``queued`` in
        the database; nothing is lost, only delayed)."""
        if self._holding:
            await asyncio.wait(list(self._holding), timeout=self.hold_grace)
        for task in list(self._holding):
            task.cancel()
        for task in list(self._holding):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
            self._retrying = None

    # -- held until their instant ----------------------------------------------------------------

    def _hold(self, messages: Sequence[RunMessage]) -> None:
        """Publish each message at its ``not_before``, from a background task per instant.
        Only a queue outside the database needs this (one in it holds the row until then).
        Held messages are not lost if this process stops first: their runs are ``queued`` in
        the database, and ``republish_held`` publishes them."""
        by_time: dict[datetime, list[RunMessage]] = {}
        for message in messages:
            assert message.not_before is not None
            by_time.setdefault(message.not_before, []).append(message)
        for at, batch in by_time.items():
            task = asyncio.create_task(self._publish_at(at, batch), name="relay-hold")
            self._holding[task] = len(batch)
            task.add_done_callback(self._release_hold)

    def _release_hold(self, task: asyncio.Task[None]) -> None:
        self._holding.pop(task, None)

    async def _publish_at(self, at: datetime, messages: list[RunMessage]) -> None:
        await asyncio.sleep(max((at - self._clock.now()).total_seconds(), 0.0))
        ready = [replace(m, not_before=None) for m in messages]
        with contextlib.suppress(Exception):  # kept and retried by publish
            await self.publish(ready)

    # -- kept after a failure --------------------------------------------------------------------

    def _keep(self, messages: Sequence[RunMessage]) -> None:
        for message in messages:
            self._unpublished[message.run_id] = message
        while len(self._unpublished) > MAX_UNPUBLISHED:
            del self._unpublished[next(iter(self._unpublished))]
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.create_task(self._retry_unpublished(), name="relay-retry")

    async def _retry_unpublished(self) -> None:
        first, longest = self.retry_delays
        delay = first
        while self._unpublished:
            await asyncio.sleep(delay)
            batch = list(self._unpublished.values())[:_RETRY_BATCH]
            try:
                await self.queue.publish_many(batch)
            except Exception as error:
                logger.debug("publishing %d kept messages failed again (%s)", len(batch), error)
                delay = min(delay * 2, longest)
                continue
            for message in batch:
                if self._unpublished.get(message.run_id) is message:
                    del self._unpublished[message.run_id]
            self._stats["republished_after_failure"] += len(batch)
            delay = first

    @contextlib.contextmanager
    def _publish_spans(self, messages: Sequence[RunMessage]) -> Iterator[Sequence[RunMessage]]:
        """A ``run.publish`` span per message, in its run's trace, open while the messages are
        handed to the queue; the messages are given the span's ``traceparent``, so that the
        worker's ``run.consume`` span follows from the publish."""
        if self._tracer is NO_TRACER:
            yield messages
            return
        traced: list[RunMessage] = []
        with contextlib.ExitStack() as spans:
            for message in messages:
                span = spans.enter_context(
                    self._tracer.span(
                        "run.publish",
                        parent=message.traceparent,
                        root=message.traceparent is None,
                        kind=SpanKind.PRODUCER,
                        attributes={
                            "messaging.destination.name": message.queue,
                            "messaging.batch.message_count": len(messages),
                            "scheduler.run.attempt": message.attempt,
                            "scheduler.run.priority": message.priority,
                        },
                    )
                )
                traceparent = span.traceparent or message.traceparent
                traced.append(replace(message, traceparent=traceparent))
            yield traced
