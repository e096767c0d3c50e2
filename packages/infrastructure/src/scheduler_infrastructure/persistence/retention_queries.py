"""The retention's statements: which finished runs and slot decisions may be deleted.

Both walk oldest first an index of their own (``ix_task_runs_finished``,
``ix_slot_decisions_at``, 0008) a window of at most a batch at a time, with a keyset, so the
rows a dependency keeps are looked at once per walk, not at every batch. A row a dependency's
fan-in may still read is left out: the fan-in looks up, for a dependent and a logical time,
the latest run of each upstream for that time and, for an upstream without one, its
``skipped`` decision. So a run or a decision about (task, logical time) is kept while a
dependent of that task — one that existed at the time — has neither a run nor a decision for
that logical time, and a run is kept until its dependents were resolved.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, literal_column, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from scheduler_domain.status import RunStatus
from scheduler_infrastructure.persistence.tables import (
    slot_decisions,
    task_dependencies,
    task_runs,
    tasks,
)

#: A keyset: the (instant, id) of the last row a batch looked at.
Key = tuple[datetime, str]

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


def _after(at: ColumnElement[datetime], id_: ColumnElement[str], key: Key | None) -> Any:
    """Past the keyset ``key`` (``at >= key`` first, so the index gives the range)."""
    if key is None:
        return true()
    return and_(at >= key[0], or_(at > key[0], id_ > key[1]))


def finished_window(
    *, before: datetime, statuses: Collection[RunStatus], limit: int, after: Key | None
) -> Select[tuple[str, str, datetime]]:
    """The next ``limit`` runs in ``statuses`` finished before ``before``, past ``after``, in
    ``(finished_at, id)`` order. The statuses are literals, so PostgreSQL matches the partial
    index."""
    return (
        select(_runs.id, _runs.status, _runs.finished_at)
        .where(
            _runs.status.in_([literal_column(f"'{status.value}'") for status in statuses]),
            _runs.finished_at < before,
            _after(_runs.finished_at, _runs.id, after),
        )
        .order_by(_runs.finished_at, _runs.id)
        .limit(limit)
    )


def deletable_runs(ids: Sequence[str]) -> Select[tuple[str]]:
    """Of the runs ``ids``, those no dependent may still read."""
    has_dependents = exists().where(_edges.upstream_id == _runs.task_id)
    return select(_runs.id).where(
        _runs.id.in_(ids),
        or_(_runs.dependents_resolved_at.is_not(None), ~has_dependents),
        ~undecided_dependent(_runs.task_id, _runs.scheduled_for, _runs.finished_at),
    )


def decisions_window(
    *, before: datetime, limit: int, after: Key | None
) -> Select[tuple[str, datetime]]:
    """The next ``limit`` decisions taken before ``before``, past ``after``, in ``(at, id)``
    order."""
    return (
        select(_decisions.id, _decisions.at)
        .where(_decisions.at < before, _after(_decisions.at, _decisions.id, after))
        .order_by(_decisions.at, _decisions.id)
        .limit(limit)
    )


def deletable_decisions(ids: Sequence[str]) -> Select[tuple[str]]:
    """Of the decisions ``ids``, those no dependent may still read."""
    return select(_decisions.id).where(
        _decisions.id.in_(ids),
        ~undecided_dependent(_decisions.task_id, _decisions.slot, _decisions.at),
    )


__all__ = [
    "decisions_window",
    "deletable_decisions",
    "deletable_runs",
    "finished_window",
    "undecided_dependent",
]
