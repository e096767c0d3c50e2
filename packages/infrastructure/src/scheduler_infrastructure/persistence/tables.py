"""The schema, in SQLAlchemy Core: one history for PostgreSQL and SQLite.

Hot fields (anything filtered, ordered or updated on its own) are real columns; policies,
parameters and results are JSON documents. Partial indexes keep the dispatcher's and workers'
queries proportional to the rows that are due, not to the size of the history. Their predicates
are module constants so that queries repeat them verbatim: SQLite only uses a partial index when
the query's WHERE contains the index's predicate term for term.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    literal_column,
    or_,
    text,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from scheduler_infrastructure.persistence.column_types import UTCDateTime, json_document

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _id(name: str, *constraints: ForeignKey, **kwargs: Any) -> Column[str]:
    return Column(name, String(64), *constraints, **kwargs)


def _at(name: str, *, nullable: bool = True) -> Column[datetime]:
    return Column(name, UTCDateTime(), nullable=nullable)


tasks = Table(
    "tasks",
    metadata,
    _id("id", primary_key=True),
    _id("owner_id", nullable=False),
    # The team that owns the task (a user's personal team has the user's id); see 0016.
    _id("team_id", nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("executor", String(64), nullable=False),
    Column("params", json_document(), nullable=False),
    Column("schedule", json_document(), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("labels", json_document(), nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("timeout_seconds", Float, nullable=True),
    Column("retry", json_document(), nullable=False),
    Column("concurrency", String(32), nullable=False),
    Column("max_concurrent", Integer, nullable=True),
    Column("misfire", json_document(), nullable=False),
    Column("spread_seconds", Float, nullable=False),
    Column("rate_limit", String(64), nullable=True),
    Column("trigger_rule", String(32), nullable=False),
    #: Write-only environment: ``{name: ciphertext}`` (never returned by the API).
    Column("secret_env", json_document(), nullable=True),
    #: A subscription: its template, the version it was last written from, and the
    #: subscriber's parameters (docs/templates.md).
    _id("template_id", nullable=True),
    Column("template_version", Integer, nullable=True),
    Column("template_params", json_document(), nullable=True),
    #: Named shared limits (a list of names; null: none). ``task_limits`` indexes them.
    Column("limits", json_document(), nullable=True),
    Column("fairness_key", String(200), nullable=True),
    _at("next_run_at"),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    Column("version", Integer, nullable=False),
    #: Names are unique within a team (0018; per creator before).
    UniqueConstraint("team_id", "name"),
)

#: Enabled tasks: the predicate of the index the dispatcher's due query walks.
TASK_ENABLED: ColumnElement[bool] = tasks.c.enabled == true()

Index(
    "ix_tasks_due",
    tasks.c.next_run_at,
    postgresql_where=TASK_ENABLED,
    sqlite_where=TASK_ENABLED,
)
#: Enabled tasks that fire ahead of their slots (``Task.fires_ahead``), and the others: each
#: with an index, so that the dispatcher's "when is something next to claim" is two index
#: lookups whatever the mix (the migration that creates them says why).
TASK_FIRES_AHEAD: ColumnElement[bool] = and_(
    TASK_ENABLED, tasks.c.concurrency == "allow", tasks.c.max_concurrent.is_(None)
)
TASK_FIRES_AT_SLOT: ColumnElement[bool] = and_(
    TASK_ENABLED, or_(tasks.c.concurrency != "allow", tasks.c.max_concurrent.is_not(None))
)
#: The gauges' distinct queue names, read as a loose index scan (see 0005).
Index("ix_tasks_queue", tasks.c.queue)
#: A template's subscriptions (a template change rewrites them; 0014).
Index("ix_tasks_template_id", tasks.c.template_id)
Index("ix_tasks_team_id", tasks.c.team_id, tasks.c.id)
Index(
    "ix_tasks_due_ahead",
    tasks.c.next_run_at,
    postgresql_where=TASK_FIRES_AHEAD,
    sqlite_where=TASK_FIRES_AHEAD,
)
Index(
    "ix_tasks_due_at_slot",
    tasks.c.next_run_at,
    postgresql_where=TASK_FIRES_AT_SLOT,
    sqlite_where=TASK_FIRES_AT_SLOT,
)

task_dependencies = Table(
    "task_dependencies",
    metadata,
    _id("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    _id("upstream_id", primary_key=True),
    # depends_on is an ordered tuple; keep the order the user gave.
    Column("position", SmallInteger, nullable=False),
)
Index("ix_task_dependencies_upstream_id", task_dependencies.c.upstream_id)

#: Which task draws on which named limit (mirrors ``tasks.limits``): what counts a limit's
#: runs in flight without reading every task.
task_limits = Table(
    "task_limits",
    metadata,
    _id("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("limit_name", String(100), primary_key=True),
)
Index("ix_task_limits_limit_name", task_limits.c.limit_name)

task_runs = Table(
    "task_runs",
    metadata,
    _id("id", primary_key=True),
    _id("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    _id("owner_id", nullable=False),
    # The task's team, kept with the run so that a team's run list is one index walk.
    _id("team_id", nullable=False),
    Column("attempt", Integer, nullable=False),
    _id("retry_of", nullable=True),
    Column("trigger", String(32), nullable=False),
    _at("scheduled_for", nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("status", String(32), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", SmallInteger, nullable=False),
    _at("not_before"),
    _id("worker_id", nullable=True),
    _at("lease_expires_at"),
    _at("heartbeat_at"),
    _at("queued_at"),
    _at("started_at"),
    _at("finished_at"),
    Column("result", json_document(), nullable=True),
    Column("error", Text, nullable=True),
    Column("output", Text, nullable=True),
    Column("traceparent", String(128), nullable=True),
    Column("version", Integer, nullable=False),
    _at("created_at", nullable=False),
    #: The template version the run was made from, the executor params fixed for it (a
    #: subscription's, or a trigger's given ``params`` merged over the task's) and the
    #: parameters it was given (0014).
    _id("template_id", nullable=True),
    Column("template_version", Integer, nullable=True),
    Column("params", json_document(), nullable=True),
    Column("run_params", json_document(), nullable=True),
    # When the dispatcher evaluated the dependents of this (terminal) run; see 0003.
    _at("dependents_resolved_at"),
    UniqueConstraint("task_id", "scheduled_for", "attempt"),
)


def _status_is(value: str) -> ColumnElement[bool]:
    return task_runs.c.status == literal_column(f"'{value}'")


RUN_PENDING = _status_is("pending")
RUN_QUEUED = _status_is("queued")
RUN_RUNNING = _status_is("running")
RUN_HAS_IDEMPOTENCY_KEY: ColumnElement[bool] = task_runs.c.idempotency_key.is_not(None)
#: Terminal runs whose dependents were not evaluated yet (runs of tasks nobody depends on stay
#: in this index but are never read: the resolver looks them up by upstream task id).
RUN_DEPENDENTS_UNRESOLVED: ColumnElement[bool] = and_(
    task_runs.c.dependents_resolved_at.is_(None),
    task_runs.c.status.in_(
        [literal_column(f"'{value}'") for value in ("succeeded", "dead_lettered", "cancelled")]
    ),
)


def _partial(
    name: str, *columns: ColumnElement[Any], where: ColumnElement[bool], unique: bool = False
) -> None:
    Index(name, *columns, unique=unique, postgresql_where=where, sqlite_where=where)


_partial(
    "uq_task_runs_task_id_idempotency_key",
    task_runs.c.task_id,
    task_runs.c.idempotency_key,
    where=RUN_HAS_IDEMPOTENCY_KEY,
    unique=True,
)
_partial("ix_task_runs_pending", task_runs.c.not_before, where=RUN_PENDING)
#: The relay's order (see 0004): due pending runs are read off this index a batch at a time
#: instead of sorting every pending run for each batch.
_partial(
    "ix_task_runs_pending_order",
    func.coalesce(task_runs.c.not_before, task_runs.c.created_at),
    task_runs.c.priority.desc(),
    task_runs.c.id,
    where=RUN_PENDING,
)
_partial("ix_task_runs_running", task_runs.c.lease_expires_at, where=RUN_RUNNING)
_partial("ix_task_runs_worker", task_runs.c.worker_id, where=RUN_RUNNING)
_partial(
    "ix_task_runs_queued",
    task_runs.c.queue,
    task_runs.c.priority.desc(),
    task_runs.c.created_at,
    task_runs.c.id,  # the whole ORDER BY of claim_next: the claim reads one entry, no sort
    where=RUN_QUEUED,
)
_partial("ix_task_runs_queued_at", task_runs.c.queued_at, where=RUN_QUEUED)
#: Queued runs with a ``not_before``: those fired ahead of their slot (see 0005).
RUN_QUEUED_NOT_BEFORE: ColumnElement[bool] = and_(RUN_QUEUED, task_runs.c.not_before.is_not(None))
_partial("ix_task_runs_queued_not_before", task_runs.c.not_before, where=RUN_QUEUED_NOT_BEFORE)
_partial(
    "ix_task_runs_dependents_unresolved",
    task_runs.c.task_id,
    task_runs.c.finished_at,
    where=RUN_DEPENDENTS_UNRESOLVED,
)
#: Runs the retention may delete (see 0008): read oldest first by ``finished_at``.
RUN_FINISHED: ColumnElement[bool] = task_runs.c.status.in_(
    [
        literal_column(f"'{value}'")
        for value in ("succeeded", "cancelled", "failed", "timed_out", "lost", "dead_lettered")
    ]
)
_partial("ix_task_runs_finished", task_runs.c.finished_at, task_runs.c.id, where=RUN_FINISHED)
# Run lists are newest first by (created_at, id), filtered by task, by team, or not at all.
# (No index by owner since 0021: no list filters runs by their creator, and every index is
# written again at each status change of a run.)
Index(
    "ix_task_runs_task_id_created_at", task_runs.c.task_id, task_runs.c.created_at, task_runs.c.id
)
Index(
    "ix_task_runs_team_id_created_at", task_runs.c.team_id, task_runs.c.created_at, task_runs.c.id
)
Index("ix_task_runs_created_at", task_runs.c.created_at, task_runs.c.id)
# ... or by queue (0017): a rare queue's page without walking every other queue's newer runs.
Index("ix_task_runs_queue_created_at", task_runs.c.queue, task_runs.c.created_at, task_runs.c.id)

run_events = Table(
    "run_events",
    metadata,
    # The event log: every run transition (``run_id`` set, ``kind`` NULL: its kind is
    # ``run.<to_status>``) and every EventRecord (``kind`` set): task changes, skipped slots,
    # whatever else is recorded. Insertion order breaks ties between events of one run stamped
    # with the same instant, and orders the log (see ``txid``).
    Column(
        "seq",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    _id("id", nullable=False, unique=True),
    _id("run_id", ForeignKey("task_runs.id", ondelete="CASCADE"), nullable=True),
    _id("task_id", nullable=True),
    Column("from_status", String(32), nullable=True),
    Column("to_status", String(32), nullable=True),
    _at("at", nullable=False),
    Column("actor", String(200), nullable=False),
    Column("detail", json_document(), nullable=False),
    Column("kind", String(64), nullable=True),
    Column("subject", String(200), nullable=True),
    _id("owner_id", nullable=True),
    # The team of the task a record is about (who reads it once the task is gone).
    _id("team_id", nullable=True),
    # PostgreSQL: the writing transaction's id (``pg_current_xact_id()``, set by a default the
    # migration installs); the log is read in (txid, seq) order up to the oldest transaction
    # still running, so a late commit never slips behind a reader's cursor. SQLite: 0 (one
    # writer at a time, so ``seq`` alone is commit order).
    Column("txid", BigInteger, nullable=False, server_default=text("0")),
    # AUTOINCREMENT: SQLite must never hand out a number again, even after the newest rows go.
    sqlite_autoincrement=True,
)
Index("ix_run_events_run_id_at", run_events.c.run_id, run_events.c.at)
Index("ix_run_events_txid_seq", run_events.c.txid, run_events.c.seq)

slot_decisions = Table(
    "slot_decisions",
    metadata,
    _id("id", primary_key=True),
    _id("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    _at("slot", nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    _id("run_id", nullable=True),
    _at("at", nullable=False),
    Column("detail", json_document(), nullable=False),
)
Index("ix_slot_decisions_task_id_at", slot_decisions.c.task_id, slot_decisions.c.at)
Index("ix_slot_decisions_task_id_slot", slot_decisions.c.task_id, slot_decisions.c.slot)
#: The retention's order (see 0008).
Index("ix_slot_decisions_at", slot_decisions.c.at, slot_decisions.c.id)

#: Runs the retention deleted, by status: the status counts add them, so they stay whole.
run_tallies = Table(
    "run_tallies",
    metadata,
    Column("status", String(32), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    _id("id", primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", json_document(), nullable=False),
    Column("labels", json_document(), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("active_runs", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("software_version", String(64), nullable=False),
    #: The credential (user or API key id) that registered the worker and alone speaks for it.
    _id("principal_id", nullable=True),
    _at("started_at", nullable=False),
    _at("heartbeat_at", nullable=False),
)

users = Table(
    "users",
    metadata,
    _id("id", primary_key=True),
    Column("username", String(64), nullable=False),
    Column("password_hash", String(512), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False),
    #: Bumped by logout, password change/reset, disabling and role change: access tokens
    #: carry the generation they were issued under and older ones are refused.
    Column("token_generation", Integer, nullable=False, server_default="0"),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    UniqueConstraint("username"),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id("id", primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(64), nullable=False),
    Column("secret_hash", String(512), nullable=False),
    _id("owner_id", nullable=False),
    Column("role", String(16), nullable=False),
    _at("created_at", nullable=False),
    _at("expires_at"),
    _at("revoked_at"),
    _at("last_used_at"),
    UniqueConstraint("prefix"),
)
Index("ix_api_keys_owner_id", api_keys.c.owner_id)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    _id("id", primary_key=True),
    _id("user_id", nullable=False),
    _id("family_id", nullable=False),
    Column("token_hash", String(512), nullable=False),
    _at("created_at", nullable=False),
    _at("expires_at", nullable=False),
    _at("used_at"),
    _at("revoked_at"),
    UniqueConstraint("token_hash"),
)
Index("ix_refresh_tokens_family_id", refresh_tokens.c.family_id)
Index("ix_refresh_tokens_user_id", refresh_tokens.c.user_id)

bulk_operations = Table(
    "bulk_operations",
    metadata,
    _id("id", primary_key=True),
    Column("action", String(32), nullable=False),
    _id("actor_id", nullable=False),
    Column("actor_role", String(16), nullable=False),
    Column("selection", json_document(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("results", json_document(), nullable=False),
    Column("position", String(512), nullable=True),
    _at("frozen_at"),
    Column("error", String(500), nullable=True),
    _at("created_at", nullable=False),
    _at("heartbeat_at"),
    _at("finished_at"),
)
Index(
    "ix_bulk_operations_status_heartbeat_at",
    bulk_operations.c.status,
    bulk_operations.c.heartbeat_at,
)

leases = Table(
    "leases",
    metadata,
    Column("resource", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    _at("expires_at", nullable=False),
)

#: Operators' settings per queue (only queues someone changed have a row).
queue_settings = Table(
    "queue_settings",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("paused", Boolean, nullable=False),
    #: As written (``10/s``); null: not set here, the configured default applies.
    Column("rate_limit", String(64), nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("limits", json_document(), nullable=True),
    Column("fairness", String(8), nullable=False, server_default="fifo"),
    Column("fair_in_flight", Integer, nullable=False, server_default=text("10")),
    Column("updated_by", String(200), nullable=False),
    _at("updated_at", nullable=False),
)

#: Named shared limits (docs/architecture.md, "Shared limits").
shared_limits = Table(
    "shared_limits",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("description", String(500), nullable=False, server_default=""),
    Column("rate", String(64), nullable=True),
    Column("partition_by", String(16), nullable=True),
    Column("partition_rate", String(64), nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("failure_threshold", Integer, nullable=True),
    Column("cool_down_seconds", Float, nullable=True),
    Column("updated_by", String(200), nullable=False),
    _at("updated_at", nullable=False),
)

#: Circuit breakers' shared state, one row per circuit that ever saw a failure.
circuits = Table(
    "circuits",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    _at("opened_at"),
    _id("probe_run_id", nullable=True),
    _at("probe_at"),
    _at("updated_at", nullable=False),
)

#: Webhook subscriptions (docs/events.md): settings, then the delivery loop's progress. The
#: signing secret is sealed by the SecretBox when ``secrets.key`` is set.
webhooks = Table(
    "webhooks",
    metadata,
    _id("id", primary_key=True),
    _id("owner_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    Column("secret", Text, nullable=False),
    Column("event_types", json_document(), nullable=False),
    _id("task_id", nullable=True),
    Column("statuses", json_document(), nullable=False),
    Column("description", String(200), nullable=False, server_default=""),
    Column("enabled", Boolean, nullable=False),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    Column("cursor_txid", BigInteger, nullable=False),
    Column("cursor_seq", BigInteger, nullable=False),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    _at("failing_since"),
    _at("next_attempt_at"),
    Column("head_attempts", Integer, nullable=False, server_default=text("0")),
    Column("disabled_reason", String(300), nullable=True),
)

#: One row per (subscription, event): the delivery log.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _id("id", primary_key=True),
    _id("webhook_id", ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(80), nullable=False),
    Column("event_kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("response_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Column("last_error", String(300), nullable=True),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    UniqueConstraint("webhook_id", "event_id"),
)
Index(
    "ix_webhook_deliveries_webhook_id_created_at",
    webhook_deliveries.c.webhook_id,
    webhook_deliveries.c.created_at,
)

#: Where each named reader of the event log got to (``event-topic``).
event_consumers = Table(
    "event_consumers",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("cursor_txid", BigInteger, nullable=False),
    Column("cursor_seq", BigInteger, nullable=False),
    _at("updated_at", nullable=False),
)

#: Templates (task types, docs/templates.md): what their subscriptions share.
templates = Table(
    "templates",
    metadata,
    _id("id", primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("executor", String(64), nullable=False),
    Column("params", json_document(), nullable=False),
    Column("params_schema", json_document(), nullable=False),
    Column("schedule", json_document(), nullable=True),
    Column("min_interval_seconds", Integer, nullable=False),
    Column("allow_custom_schedule", Boolean, nullable=False),
    Column("policies", json_document(), nullable=False),
    _id("created_by", nullable=False),
    _at("created_at", nullable=False),
    _at("updated_at", nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint("name"),
)

#: Teams (see 0016): a personal team per user, with the user's id; the others created by users.
teams = Table(
    "teams",
    metadata,
    _id("id", primary_key=True),
    Column("name", String(100), nullable=False),
    _id("personal_of", nullable=True),
    _at("created_at", nullable=False),
    UniqueConstraint("name"),
)

team_members = Table(
    "team_members",
    metadata,
    _id("team_id", ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    _id("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),
    _at("created_at", nullable=False),
)
Index("ix_team_members_user_id", team_members.c.user_id)

#: The field an ``AlreadyExists`` names for each unique constraint or unique index.
UNIQUE_FIELDS: dict[str, str] = {
    "uq_tasks_team_id_name": "name",
    "uq_templates_name": "name",
    "uq_task_runs_task_id_scheduled_for_attempt": "scheduled_for",
    "uq_task_runs_task_id_idempotency_key": "idempotency_key",
    "uq_users_username": "username",
    "uq_api_keys_prefix": "prefix",
    "uq_refresh_tokens_token_hash": "token_hash",
    "uq_teams_name": "name",
}
