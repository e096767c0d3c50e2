"""The relay: one per process, the owner of the dispatch path's state.

Runs are created ``pending`` or, when the gates let them go at once, ``queued`` in the
transaction that creates them (:meth:`RunRelay.outbox`, the one way in: see :mod:`.outbox`).
The relay loop (:meth:`RunRelay.relay_pending`) takes the pending runs whose ``not_before``
has passed through the same gates and outbox; its recovery passes (:mod:`.recovery`) send
again queued runs whose message may be lost.

The relay holds what must be shared by every path of a process: the gates' memory (full
tasks, routing history: :mod:`.gates`), the publisher's background retries and held messages
(:mod:`.publishing`) and the counters in ``stats``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from scheduler_application.dispatch.gates import RELAY_ACTOR, Gates
from scheduler_application.dispatch.outbox import Outbox
from scheduler_application.dispatch.publishing import Publisher
from scheduler_application.dispatch.queue_gate import blocked_queues, unqueue_paused
from scheduler_application.dispatch.rate_limiting import RunRateLimits
from scheduler_application.dispatch.recovery import DEFAULT_BATCH, Recovery
from scheduler_application.dispatch.routing import Router
from scheduler_application.limits.circuits import CircuitBreakers
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.ports.queue import RunMessage, RunQueue
from scheduler_application.ports.tracing import NO_TRACER, Tracer
from scheduler_application.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory

#: Rounds of ``relay_pending`` per call: each leaves out the tasks the previous one found full.
_ROUNDS = 3


class RunRelay:
    """Counters in ``stats`` (``held_max_concurrent``, ``held_no_eligible_worker``,
    ``rate_limited``, ``routed_fallback``, ``redispatched``, ``republish_skipped``,
    ``republished_after_failure``) are for the metrics exporter; they only grow."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        queue: RunQueue,
        router: Router | None = None,
        rate_limits: RunRateLimits | None = None,
        tracer: Tracer = NO_TRACER,
        circuits: CircuitBreakers | None = None,
        observer: RunObserver = NO_OBSERVER,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self.stats: Counter[str] = Counter()
        self._gates = Gates(
            clock=clock,
            router=router if router is not None else Router(),
            rate_limits=rate_limits,
            stats=self.stats,
            circuits=circuits,
            observer=observer,
        )
        self._publisher = Publisher(clock=clock, queue=queue, stats=self.stats, tracer=tracer)
        self._recovery = Recovery(
            uow_factory=uow_factory,
            clock=clock,
            gates=self._gates,
            publisher=self._publisher,
            stats=self.stats,
        )

    def outbox(self, uow: UnitOfWork, *, strict: bool = False) -> Outbox:
        """The way in for runs a use case creates in ``uow`` (see :mod:`.outbox`)."""
        return Outbox(
            uow, gates=self._gates, publisher=self._publisher, clock=self._clock, strict=strict
        )

    async def relay_pending(self, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Queue and publish up to ``limit`` pending runs whose ``not_before`` has passed.

        If publishing fails the error propagates after the commit; the runs stay ``queued`` and
        ``republish_stale_queued`` publishes them once they count as stale.
        """
        now = self._clock.now()
        changed = False
        async with self.outbox(self._uow_factory(), strict=True) as box:
            uow = box.uow
            excluded = await self._gates.still_full(uow)
            paused, excluded_queues, fair = await blocked_queues(uow)
            if paused:  # runs a concurrent relay queued as the pause committed: back to pending
                changed = bool(await unqueue_paused(uow, paused, now=now, actor=RELAY_ACTOR))
                excluded_queues |= paused
            budget = limit
            if fair:
                # A fair queue's runs are taken in turns across fairness keys, first.
                runs = (
                    await uow.runs.pending_fair(
                        now, queues=sorted(fair - excluded_queues), limit=budget
                    )
                    if fair - excluded_queues
                    else []
                )
                if runs:
                    outcome = await box.dispatch_pending(runs)
                    changed = changed or outcome.changed
                    budget -= len(runs)
                excluded_queues |= fair
            for _ in range(_ROUNDS):
                if budget <= 0:
                    break
                if excluded or excluded_queues:
                    runs = await uow.runs.pending_due_excluding(
                        now,
                        limit=budget,
                        exclude_task_ids=sorted(excluded),
                        exclude_queues=sorted(excluded_queues),
                    )
                else:
                    runs = await uow.runs.pending_due(now, limit=budget)
                if not runs:
                    break
                outcome = await box.dispatch_pending(runs)
                changed = changed or outcome.changed
                budget -= len(runs)
                if budget <= 0 or not (outcome.full_tasks or outcome.held_queues):
                    break
                excluded |= outcome.full_tasks
                excluded_queues |= outcome.held_queues
            if not changed:
                return []
            await box.commit()
        return box.sent.messages

    async def republish_stale_queued(
        self, older_than: timedelta, limit: int = DEFAULT_BATCH
    ) -> list[RunMessage]:
        """See :meth:`Recovery.republish_stale_queued`."""
        return await self._recovery.republish_stale_queued(older_than, limit)

    async def republish_held(self, past: timedelta, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """See :meth:`Recovery.republish_held`."""
        return await self._recovery.republish_held(past, limit)

    async def redispatch_orphaned(self, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """See :meth:`Recovery.redispatch_orphaned`."""
        return await self._recovery.redispatch_orphaned(limit)

    @property
    def retry_delays(self) -> tuple[float, float]:
        """First and longest wait between background tries of failed publishes, seconds."""
        return self._publisher.retry_delays

    @retry_delays.setter
    def retry_delays(self, value: tuple[float, float]) -> None:
        self._publisher.retry_delays = value

    @property
    def publish_timeout(self) -> float:
        """How long a use case's publish waits for the queue before leaving it to the
        background."""
        return self._publisher.publish_timeout

    @publish_timeout.setter
    def publish_timeout(self, value: float) -> None:
        self._publisher.publish_timeout = value

    @property
    def hold_grace(self) -> float:
        """How long :meth:`aclose` waits for held messages' instants (runs fired ahead)."""
        return self._publisher.hold_grace

    @hold_grace.setter
    def hold_grace(self, value: float) -> None:
        self._publisher.hold_grace = value

    @property
    def unpublished(self) -> int:
        """Messages waiting for another try at publishing."""
        return self._publisher.unpublished

    @property
    def holding(self) -> int:
        """Messages held for their ``not_before`` (runs fired ahead of their slots)."""
        return self._publisher.holding

    async def aclose(self) -> None:
        """Stop the publisher's background retries and held messages (see
        :meth:`Publisher.aclose`)."""
        await self._publisher.aclose()
