"""The settings schema: one frozen dataclass per TOML section.

Field types drive parsing and validation in :mod:`.loader`. Fields listed in ``SECRETS`` may only
come from the environment; a config file that sets one is refused, so secrets never end up in a
file that is committed or baked into an image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

QueueBackend = Literal["memory", "postgres", "rabbitmq", "redis"]
RunMode = Literal["all", "api", "dispatcher", "worker"]
LogFormat = Literal["auto", "json", "console"]
TraceExporter = Literal["none", "console", "otlp-grpc", "otlp-http"]

#: ``section.key`` names that only the environment may set.
SECRETS = frozenset(
    {
        "database.password",
        "rabbitmq.password",
        "redis.password",
        "api.jwt_secret",
        "secrets.key",
    }
)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///var/scheduler.db"
    password: str | None = field(default=None, repr=False)
    pool_size: int = 10
    echo: bool = False
    connect_retry_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class QueueSettings:
    backend: QueueBackend = "memory"
    prefix: str = "scheduler"


@dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    url: str = "amqp://guest@127.0.0.1:5672/"
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = ""
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RunSettings:
    mode: str = "all"
    shutdown_timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_issuer: str = "scheduler"
    jwt_audience: str = "scheduler-api"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 1_209_600
    max_body_bytes: int = 1_048_576
    max_page_size: int = 200
    #: ``/metrics`` answers without credentials; false: it needs a token or API key like the
    #: rest of the API.
    metrics_public: bool = True
    #: Processes of ``scheduler-api`` sharing its listening socket (pre-forked; each has its
    #: own database pool, caches and request metrics). ``scheduler run`` is one process.
    workers: int = 1
    #: Most objects one bulk operation by filter may handle (refused above, with the count).
    bulk_max_items: int = 100_000
    #: Most triggers one ``POST /runs/batch`` request may hold.
    batch_max_items: int = 1_000
    #: Accepted credentials (API keys, access tokens) remembered per process, and for how long
    #: at most (the session rules invalidate them at once; see docs/security.md). 0: none.
    auth_cache_size: int = 10_000
    auth_cache_seconds: float = 5.0
    #: Tasks as last read, kept per API process for ``GET /tasks/{id}``, and for how long at
    #: most (PostgreSQL only: every change to a task's row invalidates it at once in every
    #: process; see docs/api.md). 0: read every request from the database.
    task_cache_size: int = 10_000
    task_cache_seconds: float = 30.0
    #: Request rate limits per principal (API key, or user for access tokens), ``ROLE=LIMIT``
    #: (``["user=50/s", "viewer=10/s"]``; a token bucket holding ``count`` requests, refilled
    #: over ``period``); ``*=LIMIT`` for every role not listed. Shared through Redis when
    #: ``redis.url`` is set. Empty: no limit.
    rate_limits: tuple[str, ...] = ()
    #: The console's session cookie is ``Secure`` on every request, not only over HTTPS: set it
    #: when TLS ends in a proxy in front of the API.
    console_secure_cookies: bool = False


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    batch_size: int = 500
    max_sleep_seconds: float = 1.0
    #: How long before its slot a task that may fire ahead (concurrency ``allow``, no
    #: ``max_concurrent``) is fired: its run is queued then and delivered at the slot. 0: at
    #: the slot, like the other tasks.
    fire_ahead_seconds: float = 2.0
    relay_interval_seconds: float = 0.5
    reaper_interval_seconds: float = 5.0
    requeue_after_seconds: float = 60.0
    #: The standalone dispatcher's ``/metrics`` (0: none).
    metrics_port: int = 9101
    metrics_host: str = "127.0.0.1"
    #: How often queue depths and worker counts are sampled for the gauges.
    gauge_interval_seconds: float = 10.0
    #: Per-queue rate limits, ``QUEUE=LIMIT`` (``["reports=10/s", "email=100/m"]``): at most
    #: that many runs of the queue's tasks are published per period, across every dispatcher
    #: (and the API's immediate publishing) sharing the rate limiter; on top of each task's own
    #: ``rate_limit``. Give every process the same list.
    queue_rate_limits: tuple[str, ...] = ()
    #: Circuit breakers (docs/architecture.md, "Shared limits and circuit breakers"): failed
    #: runs in a row that open a circuit, and how long it stays open before one probe run is
    #: let through. A named limit may set its own; ``circuit_hosts`` overrides them per http
    #: destination host, ``HOST=THRESHOLD/COOL_DOWN_SECONDS`` (``["api.vendor.com=3/60"]``).
    circuit_failure_threshold: int = 5
    circuit_cool_down_seconds: float = 30.0
    circuit_hosts: tuple[str, ...] = ()
    #: Whether every ``http`` task's destination host gets a circuit.
    circuit_per_host: bool = True


@dataclass(frozen=True, slots=True)
class EventPublishSettings:
    """The broker topic every event is published to (docs/events.md)."""

    #: ``none``, ``rabbitmq`` (a topic exchange on ``rabbitmq.url``) or ``redis`` (a stream
    #: on ``redis.url``).
    backend: Literal["none", "rabbitmq", "redis"] = "none"
    exchange: str = "scheduler.events"
    stream: str = "scheduler:events"
    #: Redis: the stream is trimmed to about this many entries.
    stream_maxlen: int = 1_000_000
    #: Events per publish (one confirmation wait).
    batch: int = 500
    interval_seconds: float = 0.2
    #: First start: publish from the log's head (true) or from its oldest entry (false).
    start_at_head: bool = True


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Webhook deliveries (docs/events.md): run by the dispatcher, one at a time (a lease)."""

    enabled: bool = True
    #: Extra destinations webhooks may reach although loopback/private/link-local, on top of
    #: ``executors.http.allow`` (the one outbound policy): CIDRs or host names.
    allow: tuple[str, ...] = ()
    #: Bounds one attempt (connect, send, read the capped answer).
    timeout_seconds: float = 10.0
    max_attempts: int = 8
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    #: Disabled after this many failed attempts in a row spanning at least the hours below.
    disable_after_failures: int = 10
    disable_after_hours: float = 24.0
    interval_seconds: float = 0.2
    batch: int = 100
    concurrency: int = 16


@dataclass(frozen=True, slots=True)
class EventsSettings:
    """The event log (docs/events.md)."""

    publish: EventPublishSettings = field(default_factory=EventPublishSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    #: Entries older than this are deleted by the dispatcher's ``event-retention`` loop (0:
    #: kept forever). Run transitions are entries too: a run's audit trail goes with them.
    retention_days: float = 30.0
    prune_interval_seconds: float = 600.0
    #: Deleted per transaction, so no lock is held long.
    prune_batch: int = 1000
    #: SSE: a comment line after this long without an event, so proxies keep the stream.
    heartbeat_seconds: float = 15.0
    #: How often each API process looks at the log's head (one indexed row) to wake its SSE
    #: streams: the main part of their lag behind a transition.
    poll_seconds: float = 0.1


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    name: str = ""
    queues: tuple[str, ...] = ("default",)
    labels: tuple[str, ...] = ()
    capacity: int = 16
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    drain_timeout_seconds: float = 30.0
    #: How long a claim or outcome waits for others to share its transaction while runs come
    #: fast enough for a wait to gather others (milliseconds, 0-50; 0: never waits). A slow
    #: or idle worker never waits.
    batch_window_ms: float = 1.0
    output_limit_bytes: int = 65_536
    env_allowlist: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
    #: The standalone worker's ``/metrics`` (0: none).
    metrics_port: int = 9102
    metrics_host: str = "127.0.0.1"
    #: When the worker runs as root, every ``shell`` run and every ``python`` interpreter runs
    #: with a uid (and gid) of its own from ``task_uid_range``, never used by another live run
    #: of the host, with a private ``HOME``/``TMPDIR`` under ``task_home_dir`` ("": the
    #: system's temporary folder). No account of the host may have a uid in the range.
    isolate_tasks: bool = True
    task_uid_range: str = "1900000000-1900999999"
    task_uid_lock_dir: str = "/run/scheduler/task-uids"
    task_home_dir: str = ""
    #: ``"none"``: each task process gets a network namespace with only its own loopback
    #: (needs root; a worker that is not root uses the host's network, with a warning);
    #: ``"host"``: tasks use the host's network.
    task_network: str = "none"
    #: The unprivileged account ``shell`` and ``python`` tasks run as when the worker runs as
    #: root and ``isolate_tasks`` is false. Tasks run as root only with ``allow_root_tasks``
    #: (logged as a warning at start).
    run_as: str = "nobody"
    allow_root_tasks: bool = False
    #: Worker-level maxima for a task process; a task may ask for less, never more (0: none).
    max_cpu_seconds: int = 3600
    max_memory_bytes: int = 2_147_483_648
    max_processes: int = 256
    max_open_files: int = 1024
    #: Spawned sandbox interpreters kept ready for ``python`` tasks, and how many runs each
    #: serves before it is replaced (like Celery's ``max_tasks_per_child``).
    python_pool_size: int = 2
    python_max_runs_per_process: int = 100
    #: The interpreter of ``python`` tasks; it must be readable and executable by ``run_as``.
    #: Empty: the worker's own (or, when ``run_as`` cannot run that one, the system's
    #: ``pythonX.Y`` of the same version).
    python_executable: str = ""

    #: A worker silent this long (and at least three heartbeats) is offline: the dispatcher
    #: stops routing to it and re-dispatches what waits on its direct queue.
    offline_after_seconds: float = 30.0

    @property
    def silence(self) -> timedelta:
        """How long a worker may go without a heartbeat before it no longer counts as live."""
        return timedelta(seconds=max(3 * self.heartbeat_seconds, self.offline_after_seconds))


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long history is kept; the dispatcher's ``retention`` loop deletes what is older, in
    batches of ``batch_size``, every ``interval_seconds``. 0 days: kept for ever."""

    #: A worker offline this long is retired: its row is deleted, and its direct queue once
    #: empty (a queue holding a message keeps the worker until it is empty).
    workers_days: float = 1.0
    #: Runs finished this long ago (``succeeded``, ``cancelled``, and attempts that were
    #: retried) are deleted with their events; the status counts keep them (``run_tallies``).
    runs_days: float = 30.0
    #: Dead letters are an operator's open items: kept for ever unless this is set.
    dead_letters_days: float = 0.0
    #: Slot decisions (fired / skipped / misfired) taken this long ago are deleted.
    slot_decisions_days: float = 30.0
    batch_size: int = 1000
    interval_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    #: The roles whose tasks may use this executor: checked when a task is created or updated,
    #: and again by the worker before each run (the owner's role may have changed since).
    roles: tuple[str, ...] = ("admin", "operator")


@dataclass(frozen=True, slots=True)
class HttpExecutorSettings:
    roles: tuple[str, ...] = ("admin", "operator", "user")
    #: Destinations the outbound policy lets through although they are loopback, private,
    #: link-local...: CIDRs (``10.1.0.0/16``) and host names (``api.internal``).
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PythonExecutorSettings:
    roles: tuple[str, ...] = ("admin", "operator")
    #: ``module:function`` patterns (``*`` wildcards: ``myjobs.tasks:*``) a task may name, in
    #: addition to the callables of the ``scheduler.tasks`` entry-point group.
    allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutorsSettings:
    """Which role may use which executor (``executors.<name>.roles``); ``plugins`` covers every
    executor installed through the ``scheduler.executors`` entry points."""

    noop: ExecutorSettings = field(
        default_factory=lambda: ExecutorSettings(roles=("admin", "operator", "user"))
    )
    http: HttpExecutorSettings = field(default_factory=HttpExecutorSettings)
    shell: ExecutorSettings = field(default_factory=ExecutorSettings)
    python: PythonExecutorSettings = field(default_factory=PythonExecutorSettings)
    plugins: ExecutorSettings = field(default_factory=ExecutorSettings)
    #: The names of the plugin executors the workers provide: a task naming an executor that
    #: is neither built in (noop, http, shell, python) nor listed here is refused (422).
    plugin_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SecretsSettings:
    #: The key that encrypts tasks' ``secret_env`` at rest (Fernet, 32 url-safe base64 bytes).
    #: Environment or ``SCHEDULER__SECRETS__KEY_FILE`` only.
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Traces (OpenTelemetry); metrics are always on (``/metrics``)."""

    exporter: TraceExporter = "none"
    #: The collector: ``http://host:4317`` (gRPC) or ``http://host:4318`` (HTTP; the
    #: ``/v1/traces`` path is added when missing).
    otlp_endpoint: str = ""
    service_namespace: str = "scheduler"
    #: Share of new traces recorded, 0-1 (a run's spans follow its trace's decision).
    sample_ratio: float = 1.0
    #: Extra resource attributes, ``key=value`` (``deployment.environment=prod``).
    resource_attributes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    rabbitmq: RabbitMQSettings = field(default_factory=RabbitMQSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    run: RunSettings = field(default_factory=RunSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    executors: ExecutorsSettings = field(default_factory=ExecutorsSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    source: str = "built-in defaults"
