"""The one way from runs to the queue: an outbox around a unit of work.

Every path that queues runs — a trigger or a retry (:mod:`~scheduler_application.runs.service`), a
fired slot (:mod:`~scheduler_application.runs.scheduling`), a dependency
(:mod:`~scheduler_application.runs.dependencies`), the relay loop and the recovery passes — goes
through one :class:`Outbox`::

    async with relay.outbox(uow_factory()) as box:
        admitted = await box.admit(new_runs, tasks=...)   # the gates (:mod:`.gates`)
        await box.insert_new(admitted.runs, events)       # runs, events (and messages)
        await box.commit()                                # stage the rest, commit
    box.sent                                              # published after the commit

:meth:`Outbox.admit` passes new runs through the gates *before* they are written, so that a run
that may go at once is written ``queued`` directly (no second transaction on the way from
trigger to start); it hands back new run objects and never changes those it is given.
:meth:`Outbox.insert_new` inserts new runs; when the queue lives in the database it writes the
queued runs' messages in the same statement (one round trip). :meth:`Outbox.commit` stages the
messages not written yet in the transaction when the queue lives in the database (they exist
exactly when the runs do), then commits. Leaving the block returns
the unit of work's connection and then publishes what was committed (:mod:`.publishing`);
nothing is published for a block left by an exception or without a commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from scheduler_application.dispatch.gates import DISPATCHED_FIELDS, GateOutcome, Gates
from scheduler_application.dispatch.publishing import Publisher, run_message
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import RunMessage
from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun
from scheduler_domain.task import Task


@dataclass(frozen=True, slots=True)
class Admitted:
    """New runs as they leave the gates — each queued, postponed or still pending — and the
    events the gates add, to be stored after the runs' creation events."""

    runs: list[TaskRun]
    events: list[RunEvent]


@dataclass(slots=True)
class Sent:
    """What a committed outbox handed to the queue: ``messages``, and whether the queue took
    them at once (staged in the transaction, or published after it)."""

    messages: list[RunMessage] = field(default_factory=list)
    published: bool = True


class Outbox:
    """One unit of work and the runs it queues; build it with :meth:`RunRelay.outbox`.

    ``strict``: a publish that fails after the commit raises (the relay loop's passes, which
    report it); otherwise it waits at most the publisher's ``publish_timeout`` and never
    raises (a use case answering a client), ``sent.published`` saying how it went. Either way
    a failed publish is retried in the background."""

    def __init__(
        self,
        uow: UnitOfWork,
        *,
        gates: Gates,
        publisher: Publisher,
        clock: Clock,
        strict: bool = False,
    ) -> None:
        self.uow = uow
        self._gates = gates
        self._publisher = publisher
        self._clock = clock
        self._strict = strict
        self._queued: list[TaskRun] = []
        #: Messages written with their runs (:meth:`insert_new`) in the open transaction.
        self._written: list[RunMessage] = []
        self._committed: list[RunMessage] | None = None
        self._staged = False
        #: Set when the block is left after a commit.
        self.sent = Sent()

    async def __aenter__(self) -> Self:
        await self.uow.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.uow.__aexit__(exc_type, exc, tb)
        messages, self._committed = self._committed, None
        if exc is not None or not messages:
            return
        if self._staged:
            self.sent = Sent(messages)
        elif self._strict:
            await self._publisher.publish(messages)
            self.sent = Sent(messages)
        else:
            self.sent = Sent(messages, await self._publisher.publish_new(messages))

    async def admit(self, runs: Sequence[TaskRun], *, tasks: Sequence[Task] = ()) -> Admitted:
        """Pass new runs (not yet written) through the gates. ``tasks``: their tasks, if the
        caller read them already in this unit of work."""
        outcome = await self._gates.apply(self.uow, runs, self._clock.now(), tasks)
        self._queued.extend(outcome.queued)
        return Admitted(runs=outcome.runs, events=outcome.events)

    async def dispatch_pending(self, runs: Sequence[TaskRun]) -> GateOutcome:
        """Pass pending runs that exist (their rows locked by this unit of work) through the
        gates and write what they decided."""
        # Stamped after the rows were taken: a run committed while we waited for them must
        # not look queued before it was created.
        outcome = await self._gates.apply(self.uow, runs, self._clock.now())
        await self.uow.runs.update_many(outcome.writes, fields=DISPATCHED_FIELDS)
        await self.uow.events.add_many(outcome.events)
        self._queued.extend(outcome.queued)
        return outcome

    async def insert_new(self, runs: Sequence[TaskRun], events: Sequence[RunEvent]) -> set[str]:
        """Insert admitted new runs and their events (``RunRepository.add_new_many``); the ids
        inserted. When the queue lives in the database and can, the messages of the queued
        ones among them are written by the same statement — one round trip for runs, events
        and messages, each message only if its run was inserted — and :meth:`commit` has
        nothing left to stage for them. A run not inserted (its slot or key was taken) keeps
        its place here until it is inserted on another try or :meth:`discard`-ed."""
        waiting = {run.id for run in self._queued}
        messages = [run_message(run) for run in runs if run.id in waiting]
        inserted = await self._publisher.insert_with(self.uow, runs, events, messages)
        if inserted is None:
            return await self.uow.runs.add_new_many(runs, events=events)
        self._written.extend(message for message in messages if message.run_id in inserted)
        self._queued = [run for run in self._queued if run.id not in inserted]
        return inserted

    def resend(self, runs: Sequence[TaskRun]) -> None:
        """Send again runs that are queued already (recovery); their rows are the caller's."""
        self._queued.extend(runs)

    def discard(self, run_ids: Collection[str]) -> None:
        """Forget admitted runs that were not written after all (their slot had a run)."""
        if run_ids:
            self._queued = [run for run in self._queued if run.id not in run_ids]

    async def commit(self) -> None:
        """Stage the messages in the transaction if the queue lives in the database, then
        commit; what was not staged is published on leaving the block."""
        messages = [run_message(run) for run in self._queued]
        staged = await self._publisher.stage(self.uow, messages)
        # Messages written with their runs mean the queue is in this transaction: any left
        # were staged in it too (``stage`` says False only when it had none to write).
        self._staged = staged or bool(self._written)
        await self.uow.commit()
        self._queued = []
        self._committed = [*(self._committed or ()), *self._written, *messages]
        self._written = []
