"""Recovery: queued runs whose message may be lost, or waiting for a worker that is gone.

A crash (or a broker outage) between a commit and its publish leaves runs ``queued`` with no
message; so does a dispatcher that died holding a run fired ahead until its slot, or a broker
that lost a message. The relay loop's passes find such runs and send them again, through the
same :class:`~.outbox.Outbox` as new runs. Duplicates are harmless: only one claim of a run
succeeds, the others are acked and dropped.

* :meth:`Recovery.republish_stale_queued`: runs queued longer than a claim should take.
* :meth:`Recovery.republish_held`: runs fired ahead still queued past their slot.
* :meth:`Recovery.redispatch_orphaned`: runs in the direct queue of a worker that stopped
  taking work, routed again (eligibility and routing as in :mod:`.gates`).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from scheduler_application.dispatch.gates import RELAY_ACTOR, Gates, tasks_of
from scheduler_application.dispatch.outbox import Outbox
from scheduler_application.dispatch.publishing import Publisher
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.queue import RunMessage
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.events import RunEvent
from scheduler_domain.run import TaskRun
from scheduler_domain.status import RunStatus

DEFAULT_BATCH = 100
#: Direct queues looked up per query when re-dispatching.
_QUEUE_CHUNK = 500


class Recovery:
    """``stats`` (shared with the relay) counts ``republish_skipped`` and ``redispatched``."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        clock: Clock,
        gates: Gates,
        publisher: Publisher,
        stats: Counter[str],
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._gates = gates
        self._publisher = publisher
        self._stats = stats

    def _outbox(self) -> Outbox:
        return Outbox(
            self._uow_factory(),
            gates=self._gates,
            publisher=self._publisher,
            clock=self._clock,
            strict=True,
        )

    async def republish_stale_queued(
        self, older_than: timedelta, limit: int = DEFAULT_BATCH
    ) -> list[RunMessage]:
        """Publish again runs queued more than ``older_than`` ago and still unclaimed — those
        whose message may be gone (a publish that failed for good, a broker that lost it).

        A run long queued is most often just behind a backlog, its message waiting in line:
        so per queue, only as many stale runs are published again as the queue is short of
        messages (runs queued in the database minus messages ready in the queue), oldest
        first; a queue whose depth cannot be read gets all of its stale runs published. The
        republished runs' ``queued_at`` is moved to now, so the next pass waits another
        ``older_than`` before looking at them again.
        """
        now = self._clock.now()
        async with self._outbox() as box:
            stale = await box.uow.runs.stale_queued(now - older_than, limit=limit)
            await self._republish(box, stale, now)
        return box.sent.messages

    async def republish_held(self, past: timedelta, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Publish again the runs fired ahead that are still queued ``past`` after their slot,
        on a queue outside the database: the dispatcher that held their message until the
        slot may have died with it (a live one publishes at the slot), and they need not wait
        for ``republish_stale_queued``'s threshold. Only as far as their queue is short of
        messages, like stale runs; a republished run's ``queued_at`` moves past its slot, so
        it is not taken again here. Nothing to do on a queue in the database."""
        if self._publisher.in_database is not None:
            return []
        now = self._clock.now()
        async with self._outbox() as box:
            held = await box.uow.runs.held_past_due(now - past, limit=limit)
            await self._republish(box, held, now)
        return box.sent.messages

    async def _republish(self, box: Outbox, candidates: list[TaskRun], now: datetime) -> None:
        """Send again those of ``candidates`` (queued runs, oldest first) whose queue is short
        of messages, moving their ``queued_at`` to now; commits."""
        if not candidates:
            return
        by_queue: dict[str, list[TaskRun]] = {}
        for run in candidates:
            by_queue.setdefault(run.queue, []).append(run)
        queued = await box.uow.runs.count_queued(sorted(by_queue))
        chosen: list[TaskRun] = []
        for queue, runs in by_queue.items():
            missing = await self._missing_messages(queue, queued.get(queue, 0))
            take = runs if missing is None else runs[:missing]
            chosen.extend(take)
            self._stats["republish_skipped"] += len(runs) - len(take)
        if not chosen:
            return
        for run in chosen:
            run.queued_at = now
        await box.uow.runs.update_many(
            [(run, run.version) for run in chosen], fields=("queued_at",)
        )
        box.resend(chosen)
        await box.commit()

    async def _missing_messages(self, queue: str, queued: int) -> int | None:
        """How many queued runs of ``queue`` have no message waiting in it (None: unknown)."""
        try:
            depth = await self._publisher.queue.depth(queue)
        except Exception:
            return None
        return max(queued - depth, 0)

    async def redispatch_orphaned(self, limit: int = DEFAULT_BATCH) -> list[RunMessage]:
        """Route again the queued runs waiting in the direct queue of a worker that no longer
        takes work (offline, silent past the router's timeout, or draining). A run whose task
        requires labels no live worker carries waits where it is, for now."""
        now = self._clock.now()
        router = self._gates.router
        async with self._outbox() as box:
            uow = box.uow
            workers = await uow.workers.list()
            live = [w for w in workers if w.accepts_work(now=now, timeout=router.worker_timeout)]
            live_ids = {w.id for w in live}
            dead = sorted(w.direct_queue for w in workers if w.id not in live_ids)
            orphans: list[TaskRun] = []
            for start in range(0, len(dead), _QUEUE_CHUNK):
                if len(orphans) >= limit:
                    break
                chunk = dead[start : start + _QUEUE_CHUNK]
                orphans.extend(await uow.runs.queued_in(chunk, limit=limit - len(orphans)))
            if not orphans:
                return []
            tasks = await tasks_of(uow, orphans)
            moved: list[TaskRun] = []
            events: list[RunEvent] = []
            for run in orphans:
                task = tasks.get(run.task_id)
                if task is None:
                    continue
                candidates = router.eligible(task, live, now=now)
                if task.labels and not candidates:
                    continue  # no live worker may run it: it waits where it is, for now
                route = router.route(task, candidates)
                previous = run.queue
                run.queue = route.queue
                run.queued_at = now
                detail = {**route.detail(), "reason": "worker unavailable", "from_queue": previous}
                events.append(
                    RunEvent(
                        run_id=run.id,
                        task_id=run.task_id,
                        from_status=RunStatus.QUEUED,
                        to_status=RunStatus.QUEUED,
                        at=now,
                        actor=RELAY_ACTOR,
                        detail={**detail, "queue": run.queue},
                    )
                )
                moved.append(run)
                self._stats["redispatched"] += 1
            if not moved:
                return []
            await uow.runs.update_many(
                [(run, run.version) for run in moved], fields=("queue", "queued_at")
            )
            await uow.events.add_many(events)
            box.resend(moved)
            await box.commit()
        return box.sent.messages
