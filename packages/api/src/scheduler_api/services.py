"""What the app factory needs: application services already built, and a few plain options.

:mod:`scheduler_api.bootstrap` builds these from the infrastructure; tests may build them from
anything that honours the ports.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from scheduler_api.metrics import MetricsExporter
from scheduler_api.throttle import LoginThrottle
from scheduler_application.accounts.api_keys import ApiKeyService
from scheduler_application.accounts.auth import AuthService
from scheduler_application.accounts.request_limits import RequestLimits
from scheduler_application.accounts.teams import TeamService
from scheduler_application.accounts.user_admin import UserAdminService
from scheduler_application.events.log import EventService
from scheduler_application.events.stream import LogWatcher
from scheduler_application.events.webhooks import WebhookService
from scheduler_application.execution.remote_workers import RemoteWorkerService
from scheduler_application.execution.workers import WorkerService
from scheduler_application.limits.service import LimitService
from scheduler_application.operations.bulk import BulkRunner, BulkService
from scheduler_application.operations.queue_control import QueueControl
from scheduler_application.operations.status_report import StatusService
from scheduler_application.paging import MAX_PAGE_SIZE
from scheduler_application.ports.clock import Clock
from scheduler_application.ports.observer import NO_OBSERVER, RunObserver
from scheduler_application.runs.batch_trigger import BatchTrigger
from scheduler_application.runs.service import RunService
from scheduler_application.runs.trigger_group import TriggerGroup
from scheduler_application.tasks.apply import TaskApplyService
from scheduler_application.tasks.graph import TaskGraphService
from scheduler_application.tasks.service import TaskService
from scheduler_application.templates.service import TemplateService

#: A readiness check: returns when the dependency answers, raises when it does not.
Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiServices:
    tasks: TaskService
    batch: BatchTrigger
    #: Single triggers, group-committed (one per process).
    triggers: TriggerGroup
    task_apply: TaskApplyService
    bulk: BulkService
    bulk_runner: BulkRunner
    task_graph: TaskGraphService
    runs: RunService
    workers: WorkerService
    remote_workers: RemoteWorkerService
    status: StatusService
    queues: QueueControl
    limits: LimitService
    auth: AuthService
    api_keys: ApiKeyService
    users: UserAdminService
    teams: TeamService
    events: EventService
    #: Wakes the SSE streams when the log grows (one per process).
    event_watcher: LogWatcher
    clock: Clock
    #: Templates and their subscriptions.
    templates: TemplateService
    #: Webhook subscriptions (None: this API does not offer them, 503).
    webhooks: WebhookService | None = None
    #: Named readiness checks for ``/ready`` and ``/system`` (``database``, ``queue``).
    probes: Mapping[str, Probe] = field(default_factory=dict)
    #: Hears of outages the API answers with 503 (the use cases get their own).
    observer: RunObserver = NO_OBSERVER
    #: Request rate limits per principal (None: none).
    request_limits: RequestLimits | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiOptions:
    version: str = "0.0.0"
    max_body_bytes: int = 1_048_576
    max_page_size: int = 200
    #: Shown by ``/system``; must hold no secrets.
    config_summary: Mapping[str, Any] = field(default_factory=dict)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    probe_timeout: timedelta = timedelta(seconds=2)
    #: Signs page cursors, so a client can only hand back cursors the server made. Derive it
    #: from a shared secret (bootstrap does) so that cursors survive restarts and replicas.
    cursor_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    #: Serves ``/metrics`` and counts requests; None: neither.
    metrics: MetricsExporter | None = None
    #: ``/metrics`` without credentials (else admins and operators only).
    metrics_public: bool = True
    #: SSE: a comment line after this long without an event.
    event_heartbeat_seconds: float = 15.0
    #: SSE: events read per query while catching up.
    event_page: int = 200
    #: SSE: a stream ends after this long and the client reconnects after its last event,
    #: so a logged-out or disabled caller stops receiving (bootstrap: the access-token TTL).
    event_stream_seconds: float = 900.0
    #: Derives the console's CSRF tokens; from a shared secret, like ``cursor_key``.
    console_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    #: The console's cookies are ``Secure`` even on plain HTTP (TLS ends in front).
    console_secure_cookies: bool = False

    @property
    def page_cap(self) -> int:
        return max(1, min(self.max_page_size, MAX_PAGE_SIZE))
