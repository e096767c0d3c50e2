from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMessage:
    """What travels through a queue: enough to find and claim the run, never its payload."""

    run_id: str
    task_id: str
    attempt: int
    token: int
    queue: str
    priority: int
    enqueued_at: datetime
    traceparent: str | None = None
    #: Not to be delivered before this instant (a run fired ahead of its slot): a queue in the
    #: database holds the message until then; for the others the relay publishes it then.
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """A message handed to a consumer; ``tag`` is the adapter's handle for ack/nack."""

    message: RunMessage
    tag: object
    redelivered: bool = False


class RunQueue(Protocol):
    """Carries run ids from the dispatcher to workers, at least once.

    ``publish`` returns once the broker has taken responsibility for the message (confirms).
    ``consume`` yields deliveries from the named queues with at most ``prefetch`` unacked at a
    time; a delivery not acked before the consumer dies is delivered again. Higher ``priority``
    (0-9) is delivered first within a queue.
    """

    async def publish(self, message: RunMessage) -> None: ...

    async def publish_many(self, messages: Sequence[RunMessage]) -> None: ...

    def consume(self, queues: Sequence[str], *, prefetch: int) -> AsyncIterator[Delivery]: ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None: ...

    async def depth(self, queue: str) -> int: ...

    async def delete_if_empty(self, queue: str) -> bool:
        """Delete ``queue`` (and its dead letters) if it holds no message at all — ready,
        delivered and unacked, or dead-lettered; True when it is gone afterwards (or never
        existed), False when it was kept because something is in it."""
        ...


@runtime_checkable
class TransactionalRunQueue(Protocol):
    """A queue kept in the database itself (the postgres backend), which can publish inside a
    unit of work's transaction: the messages are delivered exactly when, and only if, it
    commits — an atomic outbox, with no publish after the commit and no commit of its own.

    ``publish_within`` returns False, writing nothing, when the unit of work is not on the
    queue's database; the caller then publishes after the commit as usual.
    """

    async def publish_within(self, uow: UnitOfWork, messages: Sequence[RunMessage]) -> bool: ...


@runtime_checkable
class RunInsertingQueue(Protocol):
    """A :class:`TransactionalRunQueue` that can write the messages of new runs in the very
    statement that inserts the runs (``RunRepository.add_new_many``): the runs, their events
    and their messages in one round trip, each message written only if its run was.

    ``insert_runs_within`` returns the ids of the runs inserted, or None, writing nothing, when
    the unit of work is not on the queue's database (the caller then inserts the runs itself
    and publishes as usual).
    """

    async def insert_runs_within(
        self,
        uow: UnitOfWork,
        runs: Sequence[TaskRun],
        events: Sequence[RunEvent],
        messages: Sequence[RunMessage],
    ) -> set[str] | None: ...
