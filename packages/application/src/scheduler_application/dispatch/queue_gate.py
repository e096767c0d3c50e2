"""The relay's gate for operators' queue settings (:mod:`scheduler_domain.queue_settings`).

The settings are read from the database in the relay's own transaction, every pass: a change
made through any API process applies at the next relay pass of every dispatcher (no cache to
go stale). What the gate decides about a pending run of a queue:

* ``paused``: the run stays ``pending``, untouched (no event per pass); the relay's query leaves
  paused queues out, so their backlog hides no other run. Runs already ``queued`` when the
  pause commits are put back to ``pending`` by the pause itself (:mod:`.queue_control`), and
  by :func:`unqueue_paused` at every relay pass for any that a relay queued concurrently.
* ``max_concurrency``: like a task's ``max_concurrent``, runs of the queue queued or running at
  once (a run in a worker's direct queue counts for its task's queue). The queue's settings row
  is locked (skipping a row another transaction holds) while its runs are counted, so several
  dispatchers cannot each publish the last free slot.
* ``fairness``: a ``fair`` queue's row is locked the same way, while the gates count its runs
  in flight per fairness key (``fair_in_flight``, see :mod:`.dispatch.gates`).
* ``limits``: named shared limits every run of the queue draws on.
* ``rate_limit``: the effective limit is handed to the rate-limit gate
  (:mod:`scheduler_application.dispatch.rate_limiting`): the stored one, else the configured
  default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from scheduler_application.ports.unit_of_work import UnitOfWork
from scheduler_domain.events import RunEvent
from scheduler_domain.queue_settings import QueueSettings
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.status import RunStatus

#: Why a run of a queue waits (``QueueDecisions.hold``).
PAUSED = "queue_paused"
FULL = "queue_max_concurrency"
BUSY = "queue_locked"
#: Runs put back to pending per relay pass (the rest at the next one).
UNQUEUE_BATCH = 500


@dataclass(slots=True)
class QueueDecisions:
    """The settings of every queue that has any, as read in one transaction, and the in-flight
    counts of the capped queues whose rows this transaction locked."""

    settings: dict[str, QueueSettings] = field(default_factory=dict)
    locked: set[str] = field(default_factory=set)
    in_flight: dict[str, int] = field(default_factory=dict)

    def hold(self, queue: str) -> str | None:
        """Why a run of ``queue`` may not go out now (None: it may)."""
        settings = self.settings.get(queue)
        if settings is None:
            return None
        if settings.paused:
            return PAUSED
        if settings.max_concurrency is None and not settings.fair:
            return None
        if queue not in self.locked:
            return BUSY
        if (
            settings.max_concurrency is not None
            and self.in_flight.get(queue, 0) >= settings.max_concurrency
        ):
            return FULL
        return None

    def admitted(self, queue: str) -> None:
        """A run of ``queue`` was queued: one more in flight."""
        settings = self.settings.get(queue)
        if settings is not None and settings.max_concurrency and queue in self.locked:
            self.in_flight[queue] = self.in_flight.get(queue, 0) + 1

    def rate_limit(self, queue: str) -> RateLimit | None:
        """The stored rate limit (None: not set here; the configured default applies)."""
        settings = self.settings.get(queue)
        return None if settings is None else settings.rate_limit

    def fair(self, queue: str) -> QueueSettings | None:
        """The settings of ``queue`` if it is ``fair`` and locked by this transaction."""
        settings = self.settings.get(queue)
        if settings is None or not settings.fair or queue not in self.locked:
            return None
        return settings

    def limits(self, queue: str) -> tuple[str, ...]:
        settings = self.settings.get(queue)
        return () if settings is None else settings.limits

    @property
    def paused(self) -> set[str]:
        return {name for name, s in self.settings.items() if s.paused}


async def blocked_queues(uow: UnitOfWork) -> tuple[set[str], set[str], set[str]]:
    """``(paused, full, fair)``: the queues whose pending runs the relay's query may leave out,
    and the ``fair`` ones (not paused), whose runs it takes in turns."""
    settings = await uow.queue_settings.list()
    fair = {s.name for s in settings if s.fair and not s.paused}
    paused = {s.name for s in settings if s.paused}
    capped = {s.name: s.max_concurrency for s in settings if s.max_concurrency and not s.paused}
    full: set[str] = set()
    if capped:
        counts = await uow.runs.count_in_flight_by_queue(sorted(capped))
        full = {
            name for name, cap in capped.items() if cap is not None and counts.get(name, 0) >= cap
        }
    return paused, full, fair


async def decide(uow: UnitOfWork, queues: Iterable[str]) -> QueueDecisions:
    """Read the settings of ``queues`` and lock and count those with a ``max_concurrency``."""
    wanted = sorted(set(queues))
    decisions = QueueDecisions()
    if not wanted:
        return decisions
    decisions.settings = {s.name: s for s in await uow.queue_settings.get_many(wanted)}
    capped = sorted(
        name
        for name, s in decisions.settings.items()
        if (s.max_concurrency or s.fair) and not s.paused
    )
    if capped:
        decisions.locked = await uow.queue_settings.lock_many(capped)
        counted = sorted(q for q in decisions.locked if decisions.settings[q].max_concurrency)
        if counted:
            decisions.in_flight = await uow.runs.count_in_flight_by_queue(counted)
    return decisions


async def unqueue_paused(
    uow: UnitOfWork, queues: Iterable[str], *, now: datetime, actor: str, limit: int = UNQUEUE_BATCH
) -> list[RunEvent]:
    """Put the ``queued`` runs of these (paused) queues back to ``pending``, back in their
    task's queue (a run routed to a worker's direct queue is routed again on resume). Their
    messages, if a worker gets one, find them not ``queued`` and are dropped; the relay publishes
    them again once the queue is resumed. The events are written; the caller commits."""
    wanted = sorted(set(queues))
    if not wanted:
        return []
    runs = await uow.runs.waiting_in_queues(wanted, statuses=[RunStatus.QUEUED], limit=limit)
    if not runs:
        return []
    tasks = {t.id: t for t in await uow.tasks.get_many(sorted({r.task_id for r in runs}))}
    writes = []
    events = []
    for run in runs:
        read_version = run.version
        task = tasks.get(run.task_id)
        if task is not None:
            run.queue = task.queue
        events.append(run.unqueue(now=now, actor=actor, reason=PAUSED))
        writes.append((run, read_version))
    await uow.runs.update_many(writes, fields=("status", "queue", "queued_at"))
    await uow.events.add_many(events)
    return events
