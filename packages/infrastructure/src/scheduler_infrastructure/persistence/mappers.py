"""Rows to domain objects and back. Durations are stored as float seconds, enums as their values,
sets as sorted lists, schedules and policies as the JSON documents the domain defines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from scheduler_domain.accounts import ApiKey, RefreshToken, Role, User
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.events import RunEvent, SkipReason, SlotDecision, SlotOutcome
from scheduler_domain.misfire import MisfireKind, MisfirePolicy
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.run import RunTrigger, TaskRun
from scheduler_domain.schedules import parse_schedule, schedule_to_spec
from scheduler_domain.status import RunStatus
from scheduler_domain.task import DispatchStrategy, Task, TriggerRule
from scheduler_domain.worker import Worker, WorkerStatus

Row = Mapping[Any, Any]  # RowMapping and plain dicts alike


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


def _duration(value: float) -> timedelta:
    return timedelta(seconds=value)


# -- tasks --------------------------------------------------------------------------------------


def retry_to_doc(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "max_attempts": policy.max_attempts,
        "base_delay": _seconds(policy.base_delay),
        "max_delay": _seconds(policy.max_delay),
        "jitter": _seconds(policy.jitter),
    }


def retry_from_doc(doc: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=int(doc["max_attempts"]),
        base_delay=_duration(doc["base_delay"]),
        max_delay=_duration(doc["max_delay"]),
        jitter=_duration(doc["jitter"]),
    )


def misfire_to_doc(policy: MisfirePolicy) -> dict[str, Any]:
    return {
        "kind": policy.kind.value,
        "catch_up_cap": policy.catch_up_cap,
        "grace": _seconds(policy.grace),
    }


def misfire_from_doc(doc: Mapping[str, Any]) -> MisfirePolicy:
    return MisfirePolicy(
        kind=MisfireKind(doc["kind"]),
        catch_up_cap=int(doc["catch_up_cap"]),
        grace=_duration(doc["grace"]),
    )


def task_to_row(task: Task) -> dict[str, Any]:
    """Every column of ``tasks``; ``depends_on`` goes to ``task_dependencies`` separately."""
    return {
        "id": task.id,
        "owner_id": task.owner_id,
        "team_id": task.team_id,
        "name": task.name,
        "description": task.description,
        "executor": task.executor,
        "params": task.params,
        "schedule": schedule_to_spec(task.schedule),
        "enabled": task.enabled,
        "queue": task.queue,
        "priority": task.priority,
        "labels": sorted(task.labels),
        "strategy": task.strategy.value,
        "timeout_seconds": None if task.timeout is None else _seconds(task.timeout),
        "retry": retry_to_doc(task.retry),
        "concurrency": task.concurrency.value,
        "max_concurrent": task.max_concurrent,
        "misfire": misfire_to_doc(task.misfire),
        "spread_seconds": _seconds(task.spread),
        "rate_limit": None if task.rate_limit is None else str(task.rate_limit),
        "trigger_rule": task.trigger_rule.value,
        "secret_env": dict(task.secret_env) or None,
        "template_id": task.template_id,
        "template_version": task.template_version,
        "template_params": task.template_params,
        "limits": list(task.limits) or None,
        "fairness_key": task.fairness_key,
        "next_run_at": task.next_run_at,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "version": task.version,
    }


def dependency_rows(task: Task) -> list[dict[str, Any]]:
    return [
        {"task_id": task.id, "upstream_id": upstream, "position": position}
        for position, upstream in enumerate(task.depends_on)
    ]


def limit_rows(task: Task) -> list[dict[str, Any]]:
    return [{"task_id": task.id, "limit_name": name} for name in task.limits]


def task_from_row(row: Row, depends_on: Sequence[str] = ()) -> Task:
    timeout = row["timeout_seconds"]
    rate_limit = row["rate_limit"]
    return Task(
        id=row["id"],
        owner_id=row["owner_id"],
        team_id=row["team_id"],
        name=row["name"],
        description=row["description"],
        executor=row["executor"],
        params=dict(row["params"]),
        schedule=parse_schedule(row["schedule"]),
        enabled=bool(row["enabled"]),
        queue=row["queue"],
        priority=row["priority"],
        labels=frozenset(row["labels"]),
        strategy=DispatchStrategy(row["strategy"]),
        timeout=None if timeout is None else _duration(timeout),
        retry=retry_from_doc(row["retry"]),
        concurrency=ConcurrencyPolicy(row["concurrency"]),
        max_concurrent=row["max_concurrent"],
        misfire=misfire_from_doc(row["misfire"]),
        spread=_duration(row["spread_seconds"]),
        rate_limit=None if rate_limit is None else RateLimit.parse(rate_limit),
        depends_on=tuple(depends_on),
        trigger_rule=TriggerRule(row["trigger_rule"]),
        secret_env=dict(row["secret_env"] or {}),
        template_id=row["template_id"],
        template_version=row["template_version"],
        template_params=row["template_params"],
        limits=tuple(row["limits"] or ()),
        fairness_key=row["fairness_key"],
        next_run_at=row["next_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


# -- runs and their records ---------------------------------------------------------------------

_RUN_FIELDS = (
    "id",
    "task_id",
    "owner_id",
    "team_id",
    "attempt",
    "retry_of",
    "idempotency_key",
    "queue",
    "priority",
    "not_before",
    "worker_id",
    "lease_expires_at",
    "heartbeat_at",
    "queued_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "output",
    "traceparent",
    "version",
    "scheduled_for",
    "created_at",
    "template_id",
    "template_version",
    "params",
    "run_params",
)


def run_to_row(run: TaskRun) -> dict[str, Any]:
    row = {name: getattr(run, name) for name in _RUN_FIELDS}
    row["trigger"] = run.trigger.value
    row["status"] = run.status.value
    return row


def run_from_row(row: Row) -> TaskRun:
    values = {name: row[name] for name in _RUN_FIELDS}
    return TaskRun(trigger=RunTrigger(row["trigger"]), status=RunStatus(row["status"]), **values)


def event_to_row(event: RunEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "run_id": event.run_id,
        "task_id": event.task_id,
        "from_status": None if event.from_status is None else event.from_status.value,
        "to_status": event.to_status.value,
        "at": event.at,
        "actor": event.actor,
        "detail": event.detail,
    }


def event_from_row(row: Row) -> RunEvent:
    from_status = row["from_status"]
    return RunEvent(
        id=row["id"],
        run_id=row["run_id"],
        task_id=row["task_id"],
        from_status=None if from_status is None else RunStatus(from_status),
        to_status=RunStatus(row["to_status"]),
        at=row["at"],
        actor=row["actor"],
        detail=dict(row["detail"]),
    )


def decision_to_row(decision: SlotDecision) -> dict[str, Any]:
    return {
        "id": decision.id,
        "task_id": decision.task_id,
        "slot": decision.slot,
        "outcome": decision.outcome.value,
        "reason": None if decision.reason is None else decision.reason.value,
        "run_id": decision.run_id,
        "at": decision.at,
        "detail": decision.detail,
    }


def decision_from_row(row: Row) -> SlotDecision:
    reason = row["reason"]
    return SlotDecision(
        id=row["id"],
        task_id=row["task_id"],
        slot=row["slot"],
        outcome=SlotOutcome(row["outcome"]),
        reason=None if reason is None else SkipReason(reason),
        run_id=row["run_id"],
        at=row["at"],
        detail=dict(row["detail"]),
    )


# -- workers and accounts -----------------------------------------------------------------------


def worker_to_row(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.id,
        "name": worker.name,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "queues": list(worker.queues),
        "labels": sorted(worker.labels),
        "capacity": worker.capacity,
        "active_runs": worker.active_runs,
        "status": worker.status.value,
        "software_version": worker.software_version,
        "principal_id": worker.principal_id,
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
    }


def worker_from_row(row: Row) -> Worker:
    return Worker(
        id=row["id"],
        name=row["name"],
        hostname=row["hostname"],
        pid=row["pid"],
        queues=tuple(row["queues"]),
        labels=frozenset(row["labels"]),
        capacity=row["capacity"],
        active_runs=row["active_runs"],
        status=WorkerStatus(row["status"]),
        software_version=row["software_version"],
        principal_id=row["principal_id"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
    )


def user_to_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "password_hash": user.password_hash,
        "role": user.role.value,
        "disabled": user.disabled,
        "token_generation": user.token_generation,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def user_from_row(row: Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        password_hash=row["password_hash"],
        role=Role(row["role"]),
        disabled=bool(row["disabled"]),
        token_generation=int(row["token_generation"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_API_KEY_FIELDS = (
    "id",
    "name",
    "prefix",
    "secret_hash",
    "owner_id",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
)


def api_key_to_row(key: ApiKey) -> dict[str, Any]:
    row = {name: getattr(key, name) for name in _API_KEY_FIELDS}
    row["role"] = key.role.value
    return row


def api_key_from_row(row: Row) -> ApiKey:
    return ApiKey(role=Role(row["role"]), **{name: row[name] for name in _API_KEY_FIELDS})


_REFRESH_TOKEN_FIELDS = (
    "id",
    "user_id",
    "family_id",
    "token_hash",
    "created_at",
    "expires_at",
    "used_at",
    "revoked_at",
)


def refresh_token_to_row(token: RefreshToken) -> dict[str, Any]:
    return {name: getattr(token, name) for name in _REFRESH_TOKEN_FIELDS}


def refresh_token_from_row(row: Row) -> RefreshToken:
    return RefreshToken(**{name: row[name] for name in _REFRESH_TOKEN_FIELDS})
