"""The in-memory database behind the fake repositories, with real transaction semantics.

A :class:`Transaction` keeps its writes private (an overlay over the committed rows) until
``commit`` publishes them; reads see the committed rows plus the transaction's own writes, like
``READ COMMITTED``. Commit re-checks what a database would: unique keys against rows other
transactions committed meanwhile (``AlreadyExists``) and, for versioned rows, that nobody changed
the row since this transaction wrote it (``Conflict``). Rows are stored and handed out as deep
copies, so mutating an object without writing it back changes nothing. ``SELECT … FOR UPDATE
SKIP LOCKED`` is emulated by row locks that other transactions' "due" queries skip.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scheduler_application.errors import AlreadyExists, Conflict

#: Unique keys per table: (field reported in AlreadyExists, key function; None = not indexed).
UniqueKey = tuple[str, Callable[[Any], tuple[Any, ...] | None]]

UNIQUE_KEYS: dict[str, tuple[UniqueKey, ...]] = {
    "tasks": (("name", lambda t: (t.team_id, t.name)),),
    "runs": (
        ("scheduled_for", lambda r: (r.task_id, r.scheduled_for, r.attempt)),
        (
            "idempotency_key",
            lambda r: (r.task_id, r.idempotency_key) if r.idempotency_key is not None else None,
        ),
    ),
    "users": (("username", lambda u: (u.username,)),),
    "templates": (("name", lambda t: (t.name,)),),
    "teams": (("name", lambda t: (t.name,)),),
    "api_keys": (("prefix", lambda k: (k.prefix,)),),
    "refresh_tokens": (("token_hash", lambda t: (t.token_hash,)),),
}
TABLES = (
    "tasks",
    "runs",
    "events",
    "event_log",
    "decisions",
    "workers",
    "users",
    "api_keys",
    "refresh_tokens",
    "dependency_marks",
    "bulk_operations",
    "queue_settings",
    "run_tallies",
    "templates",
    "shared_limits",
    "circuits",
    "teams",
    "team_members",
)
_DELETED = object()


@dataclass(slots=True)
class _Patch:
    """A write of a few columns that needs no version check (``UPDATE … SET a = :a WHERE …``)."""

    values: dict[str, Any]
    condition: Callable[[Any], bool] | None = None


class InMemoryStore:
    """The committed state shared by every unit of work of one test."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {name: {} for name in TABLES}
        self.commits = 0
        self.rollbacks = 0
        self.locks: dict[tuple[str, str], int] = {}
        #: Raised by the next commit instead of committing (a crash or a lost connection).
        self.fail_next_commit: BaseException | None = None
        self._serials = itertools.count(1)

    def next_serial(self) -> int:
        return next(self._serials)

    def put(self, table: str, row: Any) -> None:
        """Seed a committed row directly (a fixture), bypassing any transaction."""
        self.tables[table][row.id] = copy.deepcopy(row)

    def rows(self, table: str) -> list[Any]:
        """Deep copies of the committed rows of ``table``, for assertions."""
        return [copy.deepcopy(row) for row in self.tables[table].values()]

    def row(self, table: str, row_id: str) -> Any:
        found = self.tables[table].get(row_id)
        return copy.deepcopy(found)


@dataclass(slots=True)
class Transaction:
    store: InMemoryStore
    serial: int
    writes: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in TABLES})
    bases: dict[tuple[str, str], int | None] = field(default_factory=dict)
    inserted: set[tuple[str, str]] = field(default_factory=set)
    patches: dict[tuple[str, str], list[_Patch]] = field(default_factory=dict)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, table: str, row_id: str) -> Any | None:
        """The current row as this transaction sees it (not a copy: callers copy)."""
        written = self.writes[table].get(row_id)
        if written is _DELETED:
            return None
        if written is not None:
            return written
        return self.store.tables[table].get(row_id)

    def scan(self, table: str) -> Iterator[Any]:
        for row_id in self._ids(table):
            row = self.get(table, row_id)
            if row is not None:
                yield row

    def _ids(self, table: str) -> list[str]:
        committed = list(self.store.tables[table])
        own = [row_id for row_id in self.writes[table] if row_id not in self.store.tables[table]]
        return committed + own

    # -- writes ----------------------------------------------------------------------------------

    def insert(self, table: str, row: Any) -> None:
        if self.get(table, row.id) is not None or row.id in self.store.tables[table]:
            raise AlreadyExists(f"{table} row {row.id} already exists", field="id")
        self._check_unique(table, row, self.scan(table))
        self.writes[table][row.id] = _stored(row)
        self.inserted.add((table, row.id))

    def replace(self, table: str, row: Any) -> None:
        """Write every column of an existing row (the caller did any version check)."""
        self._check_unique(table, row, self.scan(table))
        key = (table, row.id)
        if key not in self.bases and key not in self.inserted:
            committed = self.store.tables[table].get(row.id)
            self.bases[key] = getattr(committed, "version", None)
        self.writes[table][row.id] = _stored(row)
        self.patches.pop(key, None)

    def patch(
        self,
        table: str,
        row_id: str,
        values: dict[str, Any],
        *,
        condition: Callable[[Any], bool] | None = None,
    ) -> None:
        """Set a few columns now (in this transaction's view) and, at commit, on the row as it is
        then, if ``condition`` still holds there — no version check, no lost concurrent edit."""
        key = (table, row_id)
        current = self.get(table, row_id)
        if current is None:
            return
        updated = copy.deepcopy(current)
        for name, value in values.items():
            setattr(updated, name, value)
        self.writes[table][row_id] = updated
        if key not in self.bases and key not in self.inserted:
            self.patches.setdefault(key, []).append(_Patch(dict(values), condition))

    def delete(self, table: str, row_id: str) -> None:
        key = (table, row_id)
        if key in self.inserted:
            del self.writes[table][row_id]
            self.inserted.discard(key)
            return
        if key not in self.bases:
            committed = self.store.tables[table].get(row_id)
            self.bases[key] = getattr(committed, "version", None)
        self.writes[table][row_id] = _DELETED
        self.patches.pop(key, None)

    # -- locks -----------------------------------------------------------------------------------

    def lock(self, table: str, row_id: str) -> bool:
        """Take the row lock; False if another open transaction holds it (skip it)."""
        holder = self.store.locks.setdefault((table, row_id), self.serial)
        return holder == self.serial

    def locked_by_other(self, table: str, row_id: str) -> bool:
        holder = self.store.locks.get((table, row_id))
        return holder is not None and holder != self.serial

    # -- end -------------------------------------------------------------------------------------

    def commit(self) -> None:
        failure, self.store.fail_next_commit = self.store.fail_next_commit, None
        if failure is not None:
            raise failure
        self._validate()
        store = self.store.tables
        for table, rows in self.writes.items():
            for row_id, row in rows.items():
                key = (table, row_id)
                if key in self.patches:
                    continue
                if row is _DELETED:
                    store[table].pop(row_id, None)
                else:
                    store[table][row_id] = copy.deepcopy(row)
        for (table, row_id), patches in self.patches.items():
            target = store[table].get(row_id)
            for item in patches:
                if target is None or (item.condition is not None and not item.condition(target)):
                    continue
                for name, value in item.values.items():
                    setattr(target, name, copy.deepcopy(value))
        self.store.commits += 1
        self._reset()

    def rollback(self) -> None:
        if self.has_work():
            self.store.rollbacks += 1
        self._reset()

    def has_work(self) -> bool:
        return bool(self.bases or self.inserted or any(self.writes.values()))

    def _validate(self) -> None:
        """What a database would refuse at commit because of what others committed meanwhile."""
        committed = self.store.tables
        for (table, row_id), base in self.bases.items():
            if base is None:
                continue
            current = committed[table].get(row_id)
            if current is None or current.version != base:
                raise Conflict(f"{table} row {row_id} was changed by another transaction")
        for table, rows in self.writes.items():
            others = [
                row for row_id, row in committed[table].items() if row_id not in self.writes[table]
            ]
            for row_id, row in rows.items():
                if row is _DELETED or (table, row_id) in self.patches:
                    continue
                if (table, row_id) in self.inserted and row_id in committed[table]:
                    raise AlreadyExists(f"{table} row {row_id} already exists", field="id")
                self._check_unique(table, row, iter(others))

    def _check_unique(self, table: str, row: Any, existing: Iterator[Any]) -> None:
        keys = UNIQUE_KEYS.get(table, ())
        if not keys:
            return
        wanted = [(name, fn(row)) for name, fn in keys]
        for other in existing:
            if other.id == row.id:
                continue
            for name, value in wanted:
                if value is not None and value == dict(keys)[name](other):
                    raise AlreadyExists(
                        f"a {table[:-1].replace('_', ' ')} with this {name} already exists",
                        field=name,
                    )

    def _reset(self) -> None:
        for table in TABLES:
            self.writes[table] = {}
        self.bases.clear()
        self.inserted.clear()
        self.patches.clear()
        for key, holder in list(self.store.locks.items()):
            if holder == self.serial:
                del self.store.locks[key]


def _stored(row: Any) -> Any:
    """A copy of ``row`` as a database keeps it: aware datetimes come back in UTC (the same
    instant), as they do from the SQL repositories (the contract suite checks both)."""
    stored = copy.deepcopy(row)
    if dataclasses.is_dataclass(stored):
        for item in dataclasses.fields(stored):
            value = getattr(stored, item.name)
            if isinstance(value, datetime) and value.tzinfo is not None and value.tzinfo is not UTC:
                object.__setattr__(stored, item.name, value.astimezone(UTC))
    return stored
