"""A bulk operation as it is stored: what it does, to which selection, how far it got.

See :mod:`scheduler_application.operations.bulk` for the rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from scheduler_application.accounts.access import Principal
from scheduler_domain.accounts import Role
from scheduler_domain.ids import new_id


class BulkAction(StrEnum):
    CANCEL_RUNS = "runs.cancel"
    RETRY_RUNS = "runs.retry"
    RETRIGGER_RUNS = "runs.retrigger"
    PAUSE_TASKS = "tasks.pause"
    RESUME_TASKS = "tasks.resume"
    DELETE_TASKS = "tasks.delete"

    @property
    def on_runs(self) -> bool:
        return self.value.startswith("runs.")


class BulkStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: The job itself could not go on (not one item: those are counted as failed).
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Either ``ids`` or a ``filter`` (the list endpoint's query fields, as strings/lists)."""

    ids: tuple[str, ...] | None = None
    filter: Mapping[str, Any] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        return {"ids": list(self.ids)} if self.ids is not None else {"filter": dict(self.filter)}

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Selection:
        if "ids" in document:
            return cls(ids=tuple(document["ids"]))
        return cls(filter=dict(document.get("filter") or {}))


@dataclass(slots=True, kw_only=True)
class BulkOperation:
    action: BulkAction
    actor_id: str
    actor_role: Role
    selection: Selection
    created_at: datetime
    id: str = field(default_factory=new_id)
    status: BulkStatus = BulkStatus.RUNNING
    total: int = 0
    done: int = 0
    succeeded: int = 0
    skipped: int = 0
    failed: int = 0
    #: Per item (ids selections) or the failures (filter selections): ``{"id", "outcome",
    #: "detail"?, "run_id"?}``.
    results: list[dict[str, Any]] = field(default_factory=list)
    #: Where to go on: an index into ``ids``, or the list's page cursor.
    position: str | None = None
    #: The filter's snapshot instant: runs created later are not part of the selection.
    frozen_at: datetime | None = None
    error: str | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def principal(self) -> Principal:
        return Principal(self.actor_id, self.actor_role)

    @property
    def finished(self) -> bool:
        return self.status is not BulkStatus.RUNNING
