"""Run statuses and the one table of legal transitions between them (DESIGN §4)."""

from __future__ import annotations

from enum import StrEnum

from scheduler_domain.errors import IllegalTransition


class RunStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"

    @property
    def is_final(self) -> bool:
        """No transition leaves this status except to dead-lettering of a failed attempt."""
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """Counts against concurrency: created and not yet finished."""
        return self in ACTIVE_STATUSES


#: Failed attempts: each either gets a retry run or moves on to ``dead_lettered``.
FAILURE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST})
FINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.DEAD_LETTERED} | FAILURE_STATUSES
)
ACTIVE_STATUSES = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING})

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.QUEUED, RunStatus.CANCELLED}),
    # queued → pending: its queue was paused before a worker took it (the run waits, unpublished).
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.PENDING}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.TIMED_OUT,
            RunStatus.LOST,
            RunStatus.CANCELLED,
        }
    ),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset({RunStatus.DEAD_LETTERED}),
    RunStatus.TIMED_OUT: frozenset({RunStatus.DEAD_LETTERED}),
    RunStatus.LOST: frozenset({RunStatus.DEAD_LETTERED}),
    RunStatus.CANCELLED: frozenset(),
    RunStatus.DEAD_LETTERED: frozenset(),
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def ensure_transition(current: RunStatus, target: RunStatus) -> None:
    """Raise :class:`IllegalTransition` unless the table connects ``current`` to ``target``."""
    if not can_transition(current, target):
        raise IllegalTransition(current.value, target.value)
