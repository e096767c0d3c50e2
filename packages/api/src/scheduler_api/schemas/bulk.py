"""Bulk operations: what clients send (a selection by ids or by the list endpoints' filters)
and the operation as it progresses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from scheduler_application.operations.bulk_operations import BulkOperation

ObjectId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
WaitSeconds = Annotated[float, msgspec.Meta(ge=0, le=10)]


class RunsFilterIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The run list's filters (``GET /api/v1/runs``)."""

    task_id: ObjectId | None = None
    status: list[str] | None = None
    trigger: str | None = None
    worker_id: ObjectId | None = None
    queue: Text | None = None
    created_after: str | None = None
    created_before: str | None = None


class TasksFilterIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The task list's filters (``GET /api/v1/tasks``)."""

    enabled: bool | None = None
    queue: Text | None = None
    name_prefix: Text | None = None
    owner_id: ObjectId | None = None


class BulkRunsIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``ids`` (at most 1,000) or ``filter``, not both. ``dry_run``: only count the selection.
    ``wait_seconds``: answer once done if that is sooner (200), else at once with the operation
    to follow (202)."""

    action: Literal["cancel", "retry", "retrigger"]
    ids: list[ObjectId] | None = None
    filter: RunsFilterIn | None = None
    dry_run: bool = False
    wait_seconds: WaitSeconds = 2.0


class BulkTasksIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """As for runs: ``ids`` or ``filter``; pause, resume or delete."""

    action: Literal["pause", "resume", "delete"]
    ids: list[ObjectId] | None = None
    filter: TasksFilterIn | None = None
    dry_run: bool = False
    wait_seconds: WaitSeconds = 2.0


class DryRunOut(msgspec.Struct, kw_only=True):
    action: str
    #: How many objects the selection matches now.
    matched: int


class OperationOut(msgspec.Struct, kw_only=True):
    id: str
    action: str
    #: ``running``, ``succeeded`` (every item handled, whatever each outcome) or ``failed``.
    status: str
    selection: dict[str, Any]
    total: int
    done: int
    succeeded: int
    skipped: int
    failed: int
    #: Per item for a selection by ids; the failures (first 100) for a filter.
    results: list[dict[str, Any]]
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, operation: BulkOperation) -> OperationOut:
        return cls(
            id=operation.id,
            action=operation.action.value,
            status=operation.status.value,
            selection=operation.selection.to_document(),
            total=operation.total,
            done=operation.done,
            succeeded=operation.succeeded,
            skipped=operation.skipped,
            failed=operation.failed,
            results=list(operation.results),
            error=operation.error,
            created_at=operation.created_at,
            finished_at=operation.finished_at,
        )
