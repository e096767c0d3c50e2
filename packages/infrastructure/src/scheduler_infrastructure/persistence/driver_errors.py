"""Driver errors translated into the application's errors at the persistence boundary.

Unique violations become :class:`AlreadyExists` naming the field when the constraint is known,
foreign-key violations :class:`NotFound` (the referenced row is missing), other integrity errors
:class:`Conflict`, and anything that means "the database cannot be reached or is overloaded"
:class:`Unavailable`. Anything else (a bug: bad SQL, a missing table on PostgreSQL) propagates.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import UniqueConstraint
from sqlalchemy import exc as sa_exc

from scheduler_application.errors import (
    AlreadyExists,
    ApplicationError,
    Conflict,
    Contended,
    NotFound,
    Unavailable,
)
from scheduler_infrastructure.persistence.tables import UNIQUE_FIELDS, metadata

# SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57 operator intervention
# (shutdown, cancelled by admin), 3D invalid catalog name (the database does not exist).
_UNAVAILABLE_SQLSTATE = ("08", "53", "57", "3D")
# serialization_failure and deadlock_detected: the transaction lost a race; retrying may succeed.
_RETRYABLE_SQLSTATE = ("40001", "40P01")
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<columns>[\w., ]+)")


def _sqlite_unique_names() -> dict[tuple[str, ...], str]:
    """``("table.col", ...)`` -> constraint name, for SQLite's messages that only list columns."""
    names: dict[tuple[str, ...], str] = {}
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint) and isinstance(constraint.name, str):
                key = tuple(f"{table.name}.{column.name}" for column in constraint.columns)
                names[key] = constraint.name
        for index in table.indexes:
            if index.unique and isinstance(index.name, str):
                key = tuple(f"{table.name}.{column.name}" for column in index.columns)
                names[key] = index.name
    return names


_SQLITE_UNIQUE_NAMES = _sqlite_unique_names()


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)


def _unique_constraint(error: sa_exc.IntegrityError) -> str | None:
    cause = error.orig.__cause__ if error.orig is not None else None
    name = getattr(cause, "constraint_name", None)
    if isinstance(name, str):
        return name
    match = _SQLITE_UNIQUE.search(str(error.orig))
    if match is None:
        return None
    columns = tuple(part.strip() for part in match["columns"].split(","))
    return _SQLITE_UNIQUE_NAMES.get(columns)


def _is_unique_violation(error: sa_exc.IntegrityError) -> bool:
    return _sqlstate(error) == "23505" or "UNIQUE constraint failed" in str(error.orig)


def _is_foreign_key_violation(error: sa_exc.IntegrityError) -> bool:
    return _sqlstate(error) == "23503" or "FOREIGN KEY constraint failed" in str(error.orig)


def already_exists(constraint: str | None, *, what: str = "row") -> AlreadyExists:
    if constraint is not None and constraint.startswith("pk_"):
        return AlreadyExists(f"a {what} with this id already exists", field="id")
    field = UNIQUE_FIELDS.get(constraint or "")
    if field is None:
        return AlreadyExists(f"this {what} already exists")
    return AlreadyExists(f"a {what} with this {field} already exists", field=field)


def is_unavailable(error: BaseException) -> bool:
    if isinstance(error, OSError | TimeoutError | sa_exc.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        state = _sqlstate(error)
        return state is not None and state.startswith(_UNAVAILABLE_SQLSTATE)
    return False


def _reason(error: BaseException) -> str:
    """The driver's own message: never the SQL or its parameters (hashes, tokens, payloads)."""
    source = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    lines = str(source).splitlines()
    return lines[0] if lines else type(source).__name__


def translate(error: Exception, *, what: str = "row") -> ApplicationError | None:
    """The application error ``error`` stands for, or None when it is not a known kind."""
    if isinstance(error, sa_exc.IntegrityError):
        if _is_unique_violation(error):
            return already_exists(_unique_constraint(error), what=what)
        if _is_foreign_key_violation(error):
            return NotFound(f"the {what} refers to a row that does not exist")
        return Conflict(f"the {what} violates a database constraint: {_reason(error)}")
    if isinstance(error, sa_exc.DBAPIError) and _sqlstate(error) in _RETRYABLE_SQLSTATE:
        return Contended(f"the {what} was changed concurrently, try again: {_reason(error)}")
    if is_unavailable(error):
        return Unavailable(f"the database is unavailable: {_reason(error)}", dependency="database")
    return None


@asynccontextmanager
async def translated(what: str = "row") -> AsyncIterator[None]:
    """Run a block, re-raising driver errors as application errors (cause kept)."""
    try:
        yield
    except ApplicationError:
        raise
    except Exception as error:
        replacement = translate(error, what=what)
        if replacement is None:
            raise
        raise replacement from error
