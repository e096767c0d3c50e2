"""The transactional outbox: runs are created ``pending`` in the database, then published.

``relay_pending`` marks due pending runs ``queued`` and commits *before* publishing, so a message
never names a run the database does not know. A crash (or a broker outage) between that commit
and the publish leaves runs ``queued`` with no message; ``republish_stale_queued`` finds runs
queued longer than a claim should take and publishes them again. Duplicates are harmless: only
one claim of a run succeeds, the others are acked and dropped.
"""

from __future__ import annotations

from datetime import timedelta

from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import RunMessage, RunQueue
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.run import TaskRun

RELAY_ACTOR = "relay"
DEFAULT_BATCH = 100


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
    )


class RunRelay:
    def __init__(self, *, uow_factory: UnitOfWorkFactory, clock: Clock, queue: RunQueue) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._queue = queue

    async def relay_pending(self, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Queue and publish up to ``limit`` pending runs whose ``not_before`` has passed.

        If publishing fails the error propagates after the commit; the runs stay ``queued`` and
        ``republish_stale_queued`` publishes them once they count as stale.
        """
        now = self._clock.now()
        messages: list[RunMessage] = []
        async with self._uow_factory() as uow:
            for run in await uow.runs.pending_due(now, limit=limit):
                read_version = run.version
                event = run.mark_queued(now=now, actor=RELAY_ACTOR)
                await uow.runs.update(run, expected_version=read_version)
                await uow.events.add(event)
                messages.append(run_message(run))
            if not messages:
                return []
            await uow.commit()
        await self._queue.publish_many(messages)
        return messages

    async def republish_stale_queued(
        self, older_than: timedelta, limit: int = DEFAULT_BATCH
    ) -> list[RunMessage]:
        """Publish again runs queued more than ``older_than`` ago and still unclaimed.

        Their ``queued_at`` is moved to now first, so the next pass waits another
        ``older_than`` before publishing them yet again.
        """
        now = self._clock.now()
        messages: list[RunMessage] = []
        async with self._uow_factory() as uow:
            for run in await uow.runs.stale_queued(now - older_than, limit=limit):
                run.queued_at = now
                await uow.runs.update(run, expected_version=run.version)
                messages.append(run_message(run))
            if not messages:
                return []
            await uow.commit()
        await self._queue.publish_many(messages)
        return messages
