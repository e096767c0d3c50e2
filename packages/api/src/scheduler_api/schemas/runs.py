"""Runs, their audit trail and their output."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from scheduler_application.runs.service import MANUAL_KEY_PREFIX
from scheduler_domain.events import RunEvent
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.status import RunStatus


class RunOut(msgspec.Struct, kw_only=True):
    """One attempt of one task. The captured output is served by ``/runs/{id}/output``."""

    id: str
    task_id: str
    owner_id: str
    #: The task's team: who may see the run.
    team_id: str
    attempt: int
    retry_of: str | None
    status: RunStatus
    trigger: RunTrigger
    scheduled_for: datetime
    idempotency_key: str | None
    queue: str
    priority: int
    not_before: datetime | None
    worker_id: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None
    traceparent: str | None
    created_at: datetime
    version: int
    #: The template (and version) the run was made from, for a subscription's run.
    template_id: str | None = None
    template_version: int | None = None
    #: The parameters the run was given (a trigger's merged over the task's), and the
    #: executor params fixed for it; null: the task's params as they were at execution.
    run_params: dict[str, Any] | None = None
    params: dict[str, Any] | None = None

    @classmethod
    def of(cls, run: TaskRun) -> RunOut:
        key = run.idempotency_key
        if key is not None and key.startswith(MANUAL_KEY_PREFIX):
            key = key.removeprefix(MANUAL_KEY_PREFIX)
        return cls(
            id=run.id,
            task_id=run.task_id,
            owner_id=run.owner_id,
            team_id=run.team_id,
            attempt=run.attempt,
            retry_of=run.retry_of,
            status=run.status,
            trigger=run.trigger,
            scheduled_for=run.scheduled_for,
            idempotency_key=key,
            queue=run.queue,
            priority=run.priority,
            not_before=run.not_before,
            worker_id=run.worker_id,
            lease_expires_at=run.lease_expires_at,
            heartbeat_at=run.heartbeat_at,
            queued_at=run.queued_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            result=dict(run.result) if run.result is not None else None,
            error=run.error,
            traceparent=run.traceparent,
            created_at=run.created_at,
            version=run.version,
            template_id=run.template_id,
            template_version=run.template_version,
            run_params=dict(run.run_params) if run.run_params is not None else None,
            params=dict(run.params) if run.params is not None else None,
        )


class RunPage(msgspec.Struct, kw_only=True):
    items: list[RunOut]
    next_cursor: str | None
    limit: int


class RunOutputOut(msgspec.Struct, kw_only=True):
    run_id: str
    status: RunStatus
    output: str | None
    finished: bool


class RunEventOut(msgspec.Struct, kw_only=True):
    id: str
    run_id: str
    from_status: RunStatus | None
    to_status: RunStatus
    at: datetime
    actor: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: RunEvent) -> RunEventOut:
        return cls(
            id=event.id,
            run_id=event.run_id,
            from_status=event.from_status,
            to_status=event.to_status,
            at=event.at,
            actor=event.actor,
            detail=dict(event.detail),
        )


class RunEventList(msgspec.Struct, kw_only=True):
    items: list[RunEventOut]


class BatchTriggerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One trigger of a batch: the task (its id), and optionally an idempotency key, a priority
    over the task's (0-9) and the logical time the run is for (RFC 3339 with its offset, not in
    the future; now when left out)."""

    task_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    idempotency_key: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    priority: int | None = None
    logical_time: (
        Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "date-time"})]
        | None
    ) = None
    #: Run parameters, merged over the task's and validated like a single trigger's; a bad
    #: one refuses this item only, naming the field.
    params: dict[str, Any] | None = None


class BatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Up to ``api.batch_max_items`` (1,000) triggers, answered one by one, in order."""

    triggers: list[BatchTriggerIn]


class BatchRefusalOut(msgspec.Struct, kw_only=True):
    code: str | None
    field: str | None
    detail: str | None


class BatchResultOut(msgspec.Struct, kw_only=True):
    #: ``created``, ``replayed`` (the idempotency key named a run already: that run) or
    #: ``refused`` (``error`` says why; nothing was created for it).
    status: str
    run: RunOut | None = None
    error: BatchRefusalOut | None = None


class BatchOut(msgspec.Struct, kw_only=True):
    results: list[BatchResultOut]
    created: int
    replayed: int
    refused: int
