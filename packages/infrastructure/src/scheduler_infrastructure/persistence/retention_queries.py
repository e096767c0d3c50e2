"""The retention's statements: which finished runs and slot decisions may be deleted.

Both read oldest first off an index of their own (``ix_task_runs_finished``,
``ix_slot_decisions_at``, 0008), a batch at a time. A row a dependency's fan-in may still read
is left out: the fan-in looks up, for a dependent and a logical time, the latest run of each
upstream for that time and, for an upstream without one, its ``skipped`` decision. So a run or a
decision about (task, logical time) is kept while a dependent of that task — one that existed
at the time — has neither a run nor a decision for that logical time, and a run is kept until
its dependents were resolved.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Select, exists, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.tables import (
    slot_decisions,
    task_dependencies,
    task_runs,
    tasks,
)

_runs = task_runs.c
_decisions = slot_decisions.c
_edges = task_dependencies.c


def undecided_dependent(
    task_id: ColumnElement[str],
    logical_time: ColumnElement[datetime],
    since: ColumnElement[datetime],
) -> ColumnElement[bool]:
    """A dependent of ``task_id``, created by ``since``, with no run and no decision for
    ``logical_time`` yet: it may still read the upstream's run or decision for that time."""
    dependent = tasks.alias("dependent")
    dependent_run = task_runs.alias("dependent_run")
    dependent_decision = slot_decisions.alias("dependent_decision")
    # Every level names the tables it reads; the rest is the outer row (correlated), however
    # deep it is referenced.
    no_run = ~exists(
        select(literal_column("1"))
        .where(
            dependent_run.c.task_id == _edges.task_id,
            dependent_run.c.scheduled_for == logical_time,
        )
        .correlate_except(dependent_run)
    )
    no_decision = ~exists(
        select(literal_column("1"))
        .where(
            dependent_decision.c.task_id == _edges.task_id,
            dependent_decision.c.slot == logical_time,
        )
        .correlate_except(dependent_decision)
    )
    return exists(
        select(literal_column("1"))
        .select_from(task_dependencies.join(dependent, dependent.c.id == _edges.task_id))
        .where(
            _edges.upstream_id == task_id,
            dependent.c.created_at <= since,
            no_run,
            no_decision,
        )
        .correlate_except(task_dependencies, dependent)
    )


def finished_runs(
    *, before: datetime, statuses: Collection[RunStatus], limit: int
) -> Select[tuple[str, str]]:
    """Up to ``limit`` runs in ``statuses`` finished before ``before``, oldest first, that no
    dependent may still read. The statuses are literals, so PostgreSQL matches the partial
    index."""
    has_dependents = exists().where(_edges.upstream_id == _runs.task_id)
    return (
        select(_runs.id, _runs.status)
        .where(
            _runs.status.in_([literal_column(f"'{status.value}'") for status in statuses]),
            _runs.finished_at < before,
            or_(_runs.dependents_resolved_at.is_not(None), ~has_dependents),
            ~undecided_dependent(_runs.task_id, _runs.scheduled_for, _runs.finished_at),
        )
        .order_by(_runs.finished_at)
        .limit(limit)
    )


def old_decisions(*, before: datetime, limit: int) -> Select[tuple[str]]:
    """Up to ``limit`` decisions taken before ``before``, oldest first, that no dependent may
    still read."""
    return (
        select(_decisions.id)
        .where(
            _decisions.at < before,
            ~undecided_dependent(_decisions.task_id, _decisions.slot, _decisions.at),
        )
        .order_by(_decisions.at)
        .limit(limit)
    )


__all__ = ["finished_runs", "old_decisions", "undecided_dependent"]
