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
    """One batch: runs deleted by status, decisions deleted."""

    runs: Counter[RunStatus] = field(default_factory=Counter)
    decisions: int = 0

    def full(self, limit: int) -> bool:
        """Whether a kind of history filled its batch (more may be waiting)."""
        return self.decisions >= limit or any(
            n >= limit for n in (self._finished(), self.runs[RunStatus.DEAD_LETTERED])
        )

    def _finished(self) -> int:
        return sum(n for status, n in self.runs.items() if status in FINISHED_RUNS)


class HistoryRetention:
    def __init__(
        self, *, uow_factory: UnitOfWorkFactory, clock: Clock, policy: RetentionPolicy
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._policy = policy

    async def purge(self, limit: int) -> Purge:
        """Delete up to ``limit`` rows of each kind, each kind in its own transaction (a short
        one: the rows are read off an index, oldest first)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        now = self._clock.now()
        policy = self._policy
        done = Purge()
        for keep, statuses in (
            (policy.runs, FINISHED_RUNS),
            (policy.dead_letters, frozenset({RunStatus.DEAD_LETTERED})),
        ):
            if keep is None:
                continue
            async with self._uow_factory() as uow:
                deleted = await uow.runs.purge_finished(
                    before=now - keep, statuses=statuses, limit=limit
                )
                await uow.commit()
            done.runs.update(deleted)
        if policy.slot_decisions is not None:
            async with self._uow_factory() as uow:
                done.decisions = await uow.decisions.purge(
                    before=now - policy.slot_decisions, limit=limit
                )
                await uow.commit()
        return done
