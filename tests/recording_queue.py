"""The in-process queue (:class:`~scheduler_infrastructure.queues.memory.MemoryRunQueue`, the
embedded default) with what the unit tests look at: every message published, acked, nacked and
deleted queue recorded, a switch that makes it act like a broker that is down, and deliveries
taken one at a time without a consumer. The queue semantics are the real queue's own — one
in-memory queue, not a second implementation.

:class:`InMemoryTransactionalRunQueue` also plays a queue kept in the database (the postgres
backend): ``publish_within`` stages messages in an in-memory unit of work, and they appear when
it commits. :class:`InMemoryInsertingRunQueue` also writes new runs' messages with the runs
(``insert_runs_within``), as the postgres queue does in one statement.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from scheduler_application.errors import Unavailable
from scheduler_application.ports.queue import Delivery, RunMessage
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_application.testing.unit_of_work import InMemoryUnitOfWork
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun
from scheduler_infrastructure.queues.memory import MemoryConsumer, MemoryRunQueue


class InMemoryRunQueue(MemoryRunQueue):
    def __init__(self, *, max_deliveries: int = 5) -> None:
        super().__init__(max_deliveries=max_deliveries)
        self.published: list[RunMessage] = []
        self.acked: list[RunMessage] = []
        self.nacked: list[tuple[RunMessage, bool]] = []
        self.deleted: list[str] = []
        #: Set to act like a broker that is down: publishing raises :class:`Unavailable`.
        self.unavailable = False
        self._nowait: dict[tuple[str, ...], MemoryConsumer] = {}

    def _check_open(self) -> None:
        if self.unavailable:
            raise Unavailable("the in-memory broker is marked unavailable", dependency="broker")
        super()._check_open()

    async def publish(self, message: RunMessage) -> None:
        await super().publish(message)
        self.published.append(message)

    async def publish_many(self, messages: Sequence[RunMessage]) -> None:
        await super().publish_many(messages)
        self.published.extend(messages)

    def get_nowait(self, queues: Sequence[str]) -> Delivery | None:
        """Take one delivery without waiting (for tests that drive a worker step by step); it
        stays unacked until acked or nacked, like a consumer's."""
        key = tuple(queues)
        consumer = self._nowait.get(key)
        if consumer is None:
            consumer = self._nowait[key] = self.consume(queues, prefetch=sys.maxsize)
        return consumer.take_nowait()

    async def ack(self, delivery: Delivery) -> None:
        self._outstanding(delivery)
        await super().ack(delivery)
        self.acked.append(delivery.message)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        self._outstanding(delivery)
        await super().nack(delivery, requeue=requeue)
        self.nacked.append((delivery.message, requeue))

    async def delete_if_empty(self, queue: str) -> bool:
        """Records the deleted queues in ``deleted``."""
        self._check_open()
        deleted = await super().delete_if_empty(queue)
        if deleted:
            self.deleted.append(queue)
        return deleted

    def ready(self, queue: str) -> list[RunMessage]:
        """The messages waiting in ``queue``, in delivery order."""
        return [entry.message for _rank, entry in sorted(self._ready.get(queue, ()))]

    @property
    def unacked(self) -> list[RunMessage]:
        consumers = {c for group in self._consumers.values() for c in group}
        return [tag.entry.message for consumer in consumers for tag in consumer.unacked]

    def _outstanding(self, delivery: Delivery) -> None:
        """The tests' stricter check: settling a delivery twice is a bug in the code under
        test (the real queue ignores it, as a broker ignores acks on a closed channel)."""
        tag = delivery.tag
        consumer = getattr(tag, "consumer", None)
        if consumer is None or tag not in consumer.unacked:
            raise ValueError("delivery is not outstanding (already acked, nacked or unknown)")


class InMemoryTransactionalRunQueue(InMemoryRunQueue):
    """A ``TransactionalRunQueue``: messages staged with ``publish_within`` join the unit of
    work's transaction — published at its commit, gone with a rollback. ``staged`` records each
    call's messages; ``published`` only what a commit (or a plain publish) let through."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[list[RunMessage]] = []

    async def publish_within(self, uow: UnitOfWork, messages: Sequence[RunMessage]) -> bool:
        if not isinstance(uow, InMemoryUnitOfWork):
            return False
        if self.unavailable:
            raise Unavailable("the in-memory database queue is unavailable", dependency="broker")
        batch = list(messages)
        self.staged.append(batch)
        self._deliver_at_commit(uow, batch)
        return True

    def _deliver_at_commit(self, uow: InMemoryUnitOfWork, batch: list[RunMessage]) -> None:
        def deliver() -> None:
            for message in batch:
                self.published.append(message)
                self._enqueue(message)

        uow.on_commit(deliver)


class InMemoryInsertingRunQueue(InMemoryTransactionalRunQueue):
    """A ``RunInsertingQueue`` too: ``insert_runs_within`` inserts the runs with the unit of
    work's ``add_new_many`` and stages the messages of those inserted, as the postgres queue's
    one statement writes them. ``inserted_with`` records each call's messages written."""

    def __init__(self) -> None:
        super().__init__()
        self.inserted_with: list[list[RunMessage]] = []

    async def insert_runs_within(
        self,
        uow: UnitOfWork,
        runs: Sequence[TaskRun],
        events: Sequence[RunEvent],
        messages: Sequence[RunMessage],
    ) -> set[str] | None:
        if not isinstance(uow, InMemoryUnitOfWork):
            return None
        if self.unavailable:
            raise Unavailable("the in-memory database queue is unavailable", dependency="broker")
        inserted = await uow.runs.add_new_many(runs, events=events)
        written = [message for message in messages if message.run_id in inserted]
        self.inserted_with.append(written)
        self._deliver_at_commit(uow, written)
        return inserted
