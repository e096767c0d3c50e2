"""History retention: finished runs and slot decisions older than their retention are deleted
in batches, and workers offline longer than theirs are retired (:mod:`workers`).

What is kept, and why:

* live runs (pending, queued, running) are never touched; a finished run goes with its events;
* dead letters follow their own retention (``dead_letters``; None: kept for ever), since they
  are an operator's open items;
* a run or a decision that a dependency's fan-in may still read is kept (see
  :meth:`RunRepository.purge_finished`), whatever its age;
* the status counts stay whole: the repository adds every deleted run to a tally by status.

Deleting a run forgets its idempotency key: the same key after the retention creates a new run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from scheduler_application.ports.clock import Clock
from scheduler_application.ports.repositories import PurgeBatch, PurgeKey
from scheduler_application.ports.unit_of_work import UnitOfWorkFactory
from scheduler_domain.status import RunStatus

#: Finished runs the ``runs`` retention covers: final outcomes, and attempts that were retried.
FINISHED_RUNS = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.CANCELLED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.LOST,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """How long each kind of history is kept (None: for ever)."""

    runs: timedelta | None = timedelta(days=30)
    dead_letters: timedelta | None = None
    slot_decisions: timedelta | None = timedelta(days=30)

    def __post_init__(self) -> None:
        for name in ("runs", "dead_letters", "slot_decisions"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name} retention must be positive (None keeps for ever)")


@dataclass(slots=True)
class Purge:
    """One step: runs deleted by status, decisions deleted, and whether to go on at once (a
    kind filled its batch and deleted something)."""

    runs: Counter[RunStatus] = field(default_factory=Counter)
    decisions: int = 0
    more: bool = False


class HistoryRetention:
    """Walks each kind of history with a keyset, a batch per step, and starts the walk over
    once it reached the end: a batch costs at most ``limit`` rows looked at, however many old
    rows a dependency still keeps (those are looked at again on the next walk)."""

    def __init__(
        self, *, uow_factory: UnitOfWorkFactory, clock: Clock, policy: RetentionPolicy
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._policy = policy
        self._cursors: dict[str, PurgeKey | None] = {}

    async def purge(self, limit: int) -> Purge:
        """Look at up to ``limit`` rows of each kind and delete those past their retention,
        each kind in its own short transaction."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        now = self._clock.now()
        policy = self._policy
        done = Purge()
        for kind, keep, statuses in (
            ("runs", policy.runs, FINISHED_RUNS),
            ("dead_letters", policy.dead_letters, frozenset({RunStatus.DEAD_LETTERED})),
        ):
            if keep is None:
                continue
            async with self._uow_factory() as uow:
                batch = await uow.runs.purge_finished(
                    before=now - keep, statuses=statuses, limit=limit, after=self._cursors.get(kind)
                )
                await uow.commit()
            self._advance(kind, batch, done)
            done.runs.update(batch.by_status)
        if policy.slot_decisions is not None:
            async with self._uow_factory() as uow:
                batch = await uow.decisions.purge(
                    before=now - policy.slot_decisions,
                    limit=limit,
                    after=self._cursors.get("slot_decisions"),
                )
                await uow.commit()
            self._advance("slot_decisions", batch, done)
            done.decisions = batch.deleted
        return done

    def _advance(self, kind: str, batch: PurgeBatch, done: Purge) -> None:
        """Go on from where the batch stopped. The next batch follows at once only when this
        one deleted something: a stretch of rows a dependency keeps is walked one batch per
        interval, not hammered."""
        self._cursors[kind] = batch.last
        done.more = done.more or (batch.last is not None and batch.deleted > 0)
