"""Task bodies: what clients write (documented here, validated by ``parse_task_spec``) and the
task as the API returns it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from scheduler_application.tasks.graph import TaskDependencies
from scheduler_application.tasks.service import SchedulePreview
from scheduler_application.tasks.spec import task_to_spec
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.events import SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.misfire import MisfireKind
from scheduler_domain.task import DispatchStrategy, Task, TriggerRule


class RetrySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_attempts: int | None = None
    base_delay_seconds: float | None = None
    max_delay_seconds: float | None = None
    jitter_seconds: float | None = None


class MisfireSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    policy: MisfireKind | None = None
    catch_up_cap: int | None = None
    grace_seconds: float | None = None


class TaskSpecDocument(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The task a client writes. Only ``name`` and ``executor`` are required on create; a PATCH
    sends any subset (``retry`` and ``misfire`` merge key by key). ``schedule`` is one of
    ``{"cron": "0 2 * * *", "timezone": "Europe/Berlin"}``, ``{"interval_seconds": 300}`` or
    ``{"at": "2030-01-01T00:00:00Z"}``; ``params`` depend on the executor (``shell``: ``argv``,
    ``http``: ``url``/``method``, ``python``: ``callable``, ``noop``: none). ``depends_on``
    lists upstream tasks by id or name (stored as ids); ``trigger_rule`` says when the task runs
    given how they ended, as in Airflow."""

    name: str
    executor: str
    params: dict[str, Any] | None = None
    description: str | None = None
    schedule: dict[str, Any] | None = None
    enabled: bool | None = None
    queue: str | None = None
    priority: int | None = None
    labels: list[str] | None = None
    strategy: DispatchStrategy | None = None
    timeout_seconds: float | None = None
    retry: RetrySpec | None = None
    concurrency: ConcurrencyPolicy | None = None
    max_concurrent: int | None = None
    misfire: MisfireSpec | None = None
    spread_seconds: float | None = None
    rate_limit: str | None = None
    #: Named shared limits (``/api/v1/limits``) the task's runs draw on.
    limits: list[str] | None = None
    #: Whose turn the task's runs take in a ``fair`` queue (default: the owner's).
    fairness_key: str | None = None
    depends_on: list[str] | None = None
    trigger_rule: TriggerRule | None = None
    #: Write-only environment variables for ``shell`` and ``python`` tasks, encrypted at rest:
    #: ``{"NAME": "value"}`` sets NAME, ``{"NAME": null}`` removes it, names left out keep
    #: their value. Never returned: a task shows ``secret_env_names`` only.
    secret_env: dict[str, str | None] | None = None
    #: The team to put the task in, by name or id (one where the caller is an editor or
    #: admin): the creator's personal team when left out on create; on update, a different
    #: team moves the task (with its runs) there.
    team: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None


TASK_EXAMPLE: dict[str, Any] = {
    "name": "nightly-report",
    "executor": "shell",
    "params": {"argv": ["echo", "hi"]},
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
    "retry": {"max_attempts": 3},
    "timeout_seconds": 600,
    "depends_on": [],
}


class RetryOut(msgspec.Struct, kw_only=True):
    max_attempts: int
    base_delay_seconds: float
    max_delay_seconds: float
    jitter_seconds: float


class MisfireOut(msgspec.Struct, kw_only=True):
    policy: MisfireKind
    catch_up_cap: int
    grace_seconds: float


def task_etag(version: int) -> str:
    """A task's ETag: its version, which ``If-Match`` names back."""
    return f'"{version}"'


class TaskOut(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    #: Who created it.
    owner_id: str
    #: The team it belongs to (a user's personal team has the user's id).
    team_id: str
    name: str
    description: str
    executor: str
    params: dict[str, Any]
    schedule: dict[str, Any] | None
    enabled: bool
    paused: bool
    queue: str
    priority: int
    labels: list[str]
    strategy: DispatchStrategy
    timeout_seconds: float | None
    retry: RetryOut
    concurrency: ConcurrencyPolicy
    max_concurrent: int | None
    misfire: MisfireOut
    spread_seconds: float
    rate_limit: str | None
    limits: list[str]
    fairness_key: str | None
    depends_on: list[str]
    trigger_rule: TriggerRule
    #: The names of the task's ``secret_env``; their values are never returned.
    secret_env_names: list[str]
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    #: A subscription's template, the template version it holds, and its own parameters
    #: (null for a task not made from a template).
    template_id: str | None = None
    template_version: int | None = None
    template_params: dict[str, Any] | None = None

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        fields = {
            **task_to_spec(task),
            "template_id": task.template_id,
            "template_version": task.template_version,
            "template_params": task.template_params,
            "secret_env_names": task.secret_env_names,
            "id": task.id,
            "owner_id": task.owner_id,
            "team_id": task.team_id,
            "paused": task.paused,
            "next_run_at": task.next_run_at,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
            "version": task.version,
        }
        return msgspec.convert(fields, cls, from_attributes=True, strict=False)


class TaskPage(msgspec.Struct, kw_only=True):
    items: list[TaskOut]
    next_cursor: str | None
    limit: int


class DecisionOut(msgspec.Struct, kw_only=True):
    slot: datetime
    outcome: SlotOutcome
    reason: SkipReason | None
    at: datetime
    run_id: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, decision: SlotDecision) -> DecisionOut:
        return cls(
            slot=decision.slot,
            outcome=decision.outcome,
            reason=decision.reason,
            at=decision.at,
            run_id=decision.run_id,
            detail=dict(decision.detail),
        )


class SchedulePreviewOut(msgspec.Struct, kw_only=True):
    task_id: str
    timezone: str
    paused: bool
    next_fire_times: list[datetime]
    recent_decisions: list[DecisionOut]
    day_rule: str | None = None  # cron: how day-of-month and day-of-week combine

    @classmethod
    def of(cls, preview: SchedulePreview) -> SchedulePreviewOut:
        return cls(
            task_id=preview.task_id,
            timezone=preview.timezone,
            paused=preview.paused,
            next_fire_times=list(preview.next_fire_times),
            recent_decisions=[DecisionOut.of(d) for d in preview.recent_decisions],
            day_rule=preview.day_rule,
        )


class TaskRef(msgspec.Struct, kw_only=True):
    id: str
    name: str
    owner_id: str
    team_id: str
    enabled: bool

    @classmethod
    def of(cls, task: Task) -> TaskRef:
        return cls(
            id=task.id,
            name=task.name,
            owner_id=task.owner_id,
            team_id=task.team_id,
            enabled=task.enabled,
        )


class DependenciesOut(msgspec.Struct, kw_only=True):
    task_id: str
    trigger_rule: TriggerRule
    upstreams: list[TaskRef]
    dependents: list[TaskRef]
    hidden_upstreams: int
    hidden_dependents: int

    @classmethod
    def of(cls, graph: TaskDependencies) -> DependenciesOut:
        return cls(
            task_id=graph.task_id,
            trigger_rule=graph.trigger_rule,
            upstreams=[TaskRef.of(t) for t in graph.upstreams],
            dependents=[TaskRef.of(t) for t in graph.dependents],
            hidden_upstreams=graph.hidden_upstreams,
            hidden_dependents=graph.hidden_dependents,
        )


class TriggerIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An optional trigger body. ``logical_time``: the logical time (``scheduled_for``) the run
    is for, an RFC 3339 date-time with its offset, not in the future; now when left out."""

    logical_time: (
        Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "date-time"})]
        | None
    ) = None
    #: Run parameters, merged over the task's (a subscription's: over its parameters) and
    #: validated against the template's schema or by the executor (422 naming the field).
    params: dict[str, Any] | None = None


class TasksFileIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A tasks file (``scheduler apply -f``): the caller's tasks as they should be. Each item is
    a task as on create, without ``secret_env``; ``depends_on`` may name tasks of the file."""

    tasks: list[dict[str, Any]] = msgspec.field(default_factory=list)
    version: int = 1
    #: Templates (admins and operators), matched by name and applied before the tasks.
    templates: list[dict[str, Any]] | None = None
    #: Named shared limits (operators and admins), matched by name and applied first.
    limits: list[dict[str, Any]] | None = None
    #: Subscriptions (a template, the subscriber's parameters, a schedule), matched by name
    #: among the caller's tasks like ``tasks``.
    subscriptions: list[dict[str, Any]] | None = None
    #: The team (name or id) of every task that names none itself.
    team: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None


class FieldChangeOut(msgspec.Struct, kw_only=True):
    before: Any
    after: Any


class TaskChangeOut(msgspec.Struct, kw_only=True):
    name: str
    #: ``create``, ``update``, ``delete`` or ``unchanged``.
    action: str
    task_id: str | None
    #: Each changed field (``retry.max_attempts`` for nested ones): its value before and after.
    fields: dict[str, FieldChangeOut]
    #: ``task``, ``subscription`` (``task_id``: the subscription's task), ``template``
    #: (``task_id`` is then the template's id) or ``limit`` (no id).
    kind: str = "task"


class ApplyOut(msgspec.Struct, kw_only=True):
    dry_run: bool
    changes: list[TaskChangeOut]
    #: How many tasks each action concerns.
    summary: dict[str, int]


class TasksFileOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    version: int
    tasks: list[dict[str, Any]]
    #: The caller's tasks made from a template, as subscriptions (left out: none).
    subscriptions: list[dict[str, Any]] | None = None
