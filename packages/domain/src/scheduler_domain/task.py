"""The Task: what to run, when, where and under which policies."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from scheduler_domain.clock import ensure_utc
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import ENV_EXECUTORS, is_env_name, validate_executor
from scheduler_domain.ids import new_id
from scheduler_domain.misfire import MisfirePolicy
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.schedules import Schedule
from scheduler_domain.shared_limits import validate_limit_names

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=/-]{0,99}$")
_FAIRNESS_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")
MAX_PRIORITY = 9
MAX_TIMEOUT = timedelta(days=7)
MAX_SECRET_ENV = 100
#: Variables the worker sets itself in a task's environment.
RESERVED_ENV_PREFIX = "SCHEDULER_"


class DispatchStrategy(StrEnum):
    QUEUE = "queue"
    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    RANDOM = "random"


class TriggerRule(StrEnum):
    """When a dependent runs, given how its upstreams ended (Airflow's names and meanings)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    NONE_FAILED = "none_failed"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"


@dataclass(slots=True, kw_only=True)
class TaskDefinition:
    """Everything about a task that its owner decides: the one list of those fields. A
    :class:`Task` is this plus what the server keeps (id, owner, team, sealed secrets, times,
    version); a client's spec (``scheduler_application.tasks.spec.TaskSpec``) is this plus
    what it asks of the server. Validated by :class:`Task`. In the order a spec shows them."""

    name: str
    description: str = ""
    executor: str
    params: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None
    enabled: bool = True
    queue: str = "default"
    priority: int = 5
    labels: frozenset[str] = frozenset()
    strategy: DispatchStrategy = DispatchStrategy.QUEUE
    timeout: timedelta | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    max_concurrent: int | None = None
    misfire: MisfirePolicy = field(default_factory=MisfirePolicy)
    spread: timedelta = timedelta(0)
    rate_limit: RateLimit | None = None
    #: Named shared limits (:mod:`scheduler_domain.shared_limits`) the task's runs draw on.
    limits: tuple[str, ...] = ()
    #: Whose turn a run takes in a ``fair`` queue (None: the owner's).
    fairness_key: str | None = None
    depends_on: tuple[str, ...] = ()
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS


@dataclass(slots=True, kw_only=True)
class Task(TaskDefinition):
    """A task definition. Mutating methods keep it valid; the repository persists it by version."""

    #: Who created it (kept for the record and the executor policy; access follows the team).
    owner_id: str
    #: The team that owns it; empty means the creator's personal team (whose id is theirs).
    team_id: str = ""
    #: Write-only environment variables: name → the value *sealed* (encrypted by the
    #: application's secret box). Opaque here; only the names are ever shown.
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    #: A subscription to a template (``docs/templates.md``): the template's id and the version
    #: whose executor, params and policies this task holds now, and the subscriber's own
    #: parameters (what the template's ``params`` placeholders were filled with).
    template_id: str | None = None
    template_version: int | None = None
    template_params: dict[str, Any] | None = None
    next_run_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    version: int = 1
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if not self.team_id:
            self.team_id = self.owner_id
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ValidationError` naming the first bad one."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValidationError(
                "name must be 1-200 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit",
                field="name",
            )
        if len(self.description) > 2000:
            raise ValidationError("description is limited to 2000 characters", field="description")
        validate_executor(self.executor, self.params)
        if not _QUEUE.match(self.queue):
            raise ValidationError(
                "queue must be 1-100 letters, digits, '.', '_' or '-'", field="queue"
            )
        if isinstance(self.priority, bool) or not 0 <= self.priority <= MAX_PRIORITY:
            raise ValidationError(
                f"priority must be between 0 and {MAX_PRIORITY}", field="priority"
            )
        for label in self.labels:
            if not _LABEL.match(label):
                raise ValidationError(f"label {label!r} is not a valid label", field="labels")
        if self.timeout is not None and not timedelta(seconds=1) <= self.timeout <= MAX_TIMEOUT:
            raise ValidationError(
                "timeout_seconds must be between 1 and 604800", field="timeout_seconds"
            )
        if self.max_concurrent is not None and not 1 <= self.max_concurrent <= 10_000:
            raise ValidationError(
                "max_concurrent must be between 1 and 10000", field="max_concurrent"
            )
        if not timedelta(0) <= self.spread <= timedelta(days=1):
            raise ValidationError(
                "spread_seconds must be between 0 and 86400", field="spread_seconds"
            )
        self.limits = validate_limit_names(self.limits)
        if self.fairness_key is not None and not (
            isinstance(self.fairness_key, str) and _FAIRNESS_KEY.match(self.fairness_key)
        ):
            raise ValidationError(
                "fairness_key must be 1-200 letters, digits, '.', '_', ':', '@' or '-'",
                field="fairness_key",
            )
        self._validate_secret_env()
        if self.id in self.depends_on:
            raise ValidationError("a task cannot depend on itself", field="depends_on")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValidationError("depends_on lists a task twice", field="depends_on")
        self.created_at = ensure_utc(self.created_at, field="created_at")
        self.updated_at = ensure_utc(self.updated_at, field="updated_at")
        if self.next_run_at is not None:
            self.next_run_at = ensure_utc(self.next_run_at, field="next_run_at")

    def _validate_secret_env(self) -> None:
        if not self.secret_env:
            return
        if self.executor not in ENV_EXECUTORS:
            raise ValidationError(
                f"secret_env is only for the {' and '.join(sorted(ENV_EXECUTORS))} executors "
                f"(their process gets it in its environment), not {self.executor!r}",
                field="secret_env",
            )
        if len(self.secret_env) > MAX_SECRET_ENV:
            raise ValidationError(
                f"secret_env is limited to {MAX_SECRET_ENV} variables", field="secret_env"
            )
        env = self.params.get("env")
        plain = set(env) if isinstance(env, dict) else set()
        for name in self.secret_env:
            if not is_env_name(name):
                raise ValidationError(
                    f"{name!r} is not an environment variable name: letters, digits and '_', "
                    "not starting with a digit",
                    field="secret_env",
                )
            if name.upper().startswith(RESERVED_ENV_PREFIX):
                raise ValidationError(
                    f"{name!r}: names starting with {RESERVED_ENV_PREFIX} are the worker's",
                    field="secret_env",
                )
            if name in plain:
                raise ValidationError(
                    f"{name!r} is in both env and secret_env; keep it in one", field="secret_env"
                )

    @property
    def secret_env_names(self) -> list[str]:
        """What may be shown of ``secret_env``: its names, sorted."""
        return sorted(self.secret_env)

    @property
    def paused(self) -> bool:
        return not self.enabled

    @property
    def fires_ahead(self) -> bool:
        """Whether a slot of this task may be fired before it comes (the dispatcher's
        ``fire_ahead_seconds``): its run is written and queued early, to be delivered at the
        slot. Only when nothing that happens until the slot could change what firing decides:
        concurrency ``allow`` and no ``max_concurrent`` (``forbid``, ``replace``, ``buffer_one``
        and the cap look at the runs active *at the slot*). Mirrored by the dispatcher's
        query (``TASK_FIRES_AHEAD`` in the persistence tables)."""
        return self.concurrency is ConcurrencyPolicy.ALLOW and self.max_concurrent is None

    def first_fire_after(self, now: datetime) -> datetime | None:
        """The next slot of the schedule strictly after ``now`` (None: no schedule or exhausted)."""
        return self.schedule.next_after(now) if self.schedule is not None else None

    def reschedule(self, now: datetime) -> None:
        """Point ``next_run_at`` at the next slot after ``now`` (used on create, resume, edits)."""
        self.next_run_at = self.first_fire_after(now) if self.enabled else None

    def pause(self, now: datetime) -> None:
        self.enabled = False
        self.next_run_at = None
        self.touch(now)

    def resume(self, now: datetime) -> None:
        self.enabled = True
        self.reschedule(now)
        self.touch(now)

    def touch(self, now: datetime) -> None:
        self.updated_at = ensure_utc(now, field="updated_at")

    @property
    def fair_share_key(self) -> str:
        """Whose turn a run of this task takes in a ``fair`` queue."""
        return self.fairness_key if self.fairness_key is not None else self.owner_id

    def runs_on(self, worker_labels: Iterable[str]) -> bool:
        """Whether a worker with ``worker_labels`` may run this task."""
        return self.labels <= frozenset(worker_labels)
