"""PostgreSQL: many tasks written in one statement — what a template change needs, rewriting
every subscription of the template in its transaction.

``UPDATE tasks … FROM unnest(<one array per column>)``: one prepared statement whatever the
number of tasks, conditional on each task's version, returning the ids it wrote. The statement
is written out from the table's own column names (no outside input), once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, TextClause, text

from scheduler_domain.task import Task
from scheduler_infrastructure.persistence.column_types import UTCDateTime, json_text
from scheduler_infrastructure.persistence.mappers import task_to_row
from scheduler_infrastructure.persistence.tables import tasks

#: Every column an update writes (all but the id).
_WRITTEN = tuple(column for column in tasks.c if column.name != "id")
_JSON = frozenset(column.name for column in _WRITTEN if isinstance(column.type, JSON))

DELETE_DEPENDENCIES = text(
    "DELETE FROM task_dependencies WHERE task_id = ANY(CAST(:ids AS text[]))"
)
DELETE_LIMITS = text("DELETE FROM task_limits WHERE task_id = ANY(CAST(:ids AS text[]))")


def _array_type(column: Any) -> str:
    """The element type a column's values travel as in ``unnest``."""
    if isinstance(column.type, UTCDateTime):
        return "timestamptz"
    if isinstance(column.type, Boolean):
        return "boolean"
    if isinstance(column.type, Float):
        return "double precision"
    if isinstance(column.type, Integer):  # SmallInteger too
        return "bigint"
    return "text"  # strings, and JSON documents as their text (cast to jsonb below)


def _assignment(name: str) -> str:
    if name in _JSON:
        return f'"{name}" = CAST(v."{name}" AS jsonb)'
    return f'"{name}" = v."{name}"'


@cache
def update_many_statement() -> TextClause:
    names = [column.name for column in _WRITTEN]
    return text(
        "UPDATE tasks AS t SET "  # noqa: S608
        + ", ".join(_assignment(name) for name in names)
        + " FROM unnest(CAST(:id AS text[]), CAST(:expected AS bigint[]), "
        + ", ".join(f"CAST(:{c.name} AS {_array_type(c)}[])" for c in _WRITTEN)
        + ') AS v("id", "expected", '
        + ", ".join(f'"{name}"' for name in names)
        + ") WHERE t.id = v.id AND t.version = v.expected RETURNING t.id"
    )


def update_many_params(writes: Sequence[tuple[Task, int]]) -> dict[str, list[Any]]:
    rows: list[Mapping[str, Any]] = [task_to_row(task) for task, _ in writes]
    params: dict[str, list[Any]] = {
        "id": [task.id for task, _ in writes],
        "expected": [expected for _, expected in writes],
    }
    for column in _WRITTEN:
        name = column.name
        if name in _JSON:
            params[name] = [None if row[name] is None else json_text(row[name]) for row in rows]
        else:
            params[name] = [row[name] for row in rows]
    return params
