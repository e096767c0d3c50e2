"""The body of ``tasks create`` and ``tasks update``: a JSON document (``--file``, ``-`` for
stdin) with the command-line flags laid over it. The server validates the result and names the
offending field; only what the flags themselves can get wrong is checked here."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler_cli.errors import BadInput


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFlags:
    name: str | None = None
    executor: str | None = None
    argv: str | None = None
    params: list[str] = field(default_factory=list)
    description: str | None = None
    cron: str | None = None
    timezone: str | None = None
    interval: float | None = None
    at: str | None = None
    no_schedule: bool = False
    queue: str | None = None
    team: str | None = None
    priority: int | None = None
    labels: list[str] | None = None
    #: Named shared limits (``--limit``).
    limits: list[str] | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    enabled: bool | None = None
    depends_on: list[str] | None = None  # ids, already resolved
    strategy: str | None = None
    concurrency: str | None = None
    #: ``"none"`` removes the cap.
    max_concurrent: str | None = None
    misfire: str | None = None
    catch_up_cap: int | None = None
    misfire_grace: float | None = None
    spread: float | None = None
    #: ``"none"`` removes the limit.
    rate_limit: str | None = None
    trigger_rule: str | None = None
    retry_base_delay: float | None = None
    retry_max_delay: float | None = None
    retry_jitter: float | None = None
    dst_gap: str | None = None
    dst_fold: str | None = None
    #: ``secret_env`` changes, already read (:mod:`scheduler_cli.secret_input`).
    secret_env: dict[str, str | None] = field(default_factory=dict, repr=False)


def read_document(source: str | None) -> dict[str, Any]:
    """The JSON object in ``source`` (a path, or ``-`` for stdin); ``{}`` without one."""
    if source is None:
        return {}
    label = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read {label}: {error.strerror or error}") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise BadInput(f"{label} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadInput(f"{label} must hold a JSON object (the task), not {type(document).__name__}")
    return document


def task_body(
    document: dict[str, Any], flags: TaskFlags, *, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``document`` with ``flags`` applied. ``current`` (the task, on update) lets
    ``--timezone`` alone move the existing cron schedule to another zone."""
    body = dict(document)
    simple = {
        "name": flags.name,
        "executor": flags.executor,
        "description": flags.description,
        "queue": flags.queue,
        "team": flags.team,
        "priority": flags.priority,
        "timeout_seconds": flags.timeout,
        "enabled": flags.enabled,
        "labels": flags.labels,
        "limits": flags.limits,
        "depends_on": flags.depends_on,
        "strategy": flags.strategy,
        "concurrency": flags.concurrency,
        "spread_seconds": flags.spread,
        "trigger_rule": flags.trigger_rule,
    }
    body.update({key: value for key, value in simple.items() if value is not None})
    if flags.max_concurrent is not None:
        body["max_concurrent"] = _count_or_none(flags.max_concurrent, "--max-concurrent")
    if flags.rate_limit is not None:
        body["rate_limit"] = None if flags.rate_limit.lower() == "none" else flags.rate_limit
    _merge(
        body,
        "retry",
        {
            "max_attempts": flags.max_attempts,
            "base_delay_seconds": flags.retry_base_delay,
            "max_delay_seconds": flags.retry_max_delay,
            "jitter_seconds": flags.retry_jitter,
        },
    )
    _merge(
        body,
        "misfire",
        {
            "policy": flags.misfire,
            "catch_up_cap": flags.catch_up_cap,
            "grace_seconds": flags.misfire_grace,
        },
    )
    params = _params(flags)
    if params:
        body["params"] = {**_object(body.get("params")), **params}
        if "argv" in params and "executor" not in body and current is None:
            body["executor"] = "shell"
    if flags.secret_env:
        body["secret_env"] = {**_object(body.get("secret_env")), **flags.secret_env}
    schedule = _schedule(flags, body.get("schedule"), current)
    if schedule is not _UNCHANGED:
        body["schedule"] = schedule
    return body


_UNCHANGED: Any = object()


def _merge(body: dict[str, Any], key: str, values: dict[str, Any]) -> None:
    """The flags given for the object ``key`` (``retry``, ``misfire``) laid over it."""
    given = {name: value for name, value in values.items() if value is not None}
    if given:
        body[key] = {**_object(body.get(key)), **given}


def _count_or_none(text: str, flag: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"{flag} takes a whole number or 'none', not {text!r}") from None


def _object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _params(flags: TaskFlags) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in flags.params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--param takes KEY=VALUE, not {item!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    if flags.argv is not None:
        try:
            argv = shlex.split(flags.argv)
        except ValueError as error:
            raise BadInput(f"--argv cannot be split like a shell line: {error}") from None
        if not argv:
            raise BadInput("--argv is empty")
        params["argv"] = argv
    return params


def _schedule(flags: TaskFlags, given: Any, current: dict[str, Any] | None) -> Any:
    given_flags = (("--cron", flags.cron), ("--every", flags.interval), ("--at", flags.at))
    chosen = [name for name, value in given_flags if value is not None]
    if flags.no_schedule:
        chosen.append("--no-schedule")
    if len(chosen) > 1:
        raise BadInput(f"give one schedule, not {' and '.join(chosen)}")
    if flags.no_schedule:
        return None
    if flags.cron is not None:
        schedule: dict[str, Any] = {"cron": flags.cron}
        zone = flags.timezone or _zone(given) or _zone(_schedule_of(current))
        if zone:
            schedule["timezone"] = zone
        return {**schedule, **_dst(flags)}
    if flags.interval is not None:
        return {"interval_seconds": flags.interval}
    if flags.at is not None:
        return {"at": flags.at}
    cron_flags = [
        name
        for name, value in (
            ("--timezone", flags.timezone),
            ("--dst-gap", flags.dst_gap),
            ("--dst-fold", flags.dst_fold),
        )
        if value is not None
    ]
    if cron_flags:
        base = given if isinstance(given, dict) else _schedule_of(current)
        if not isinstance(base, dict) or "cron" not in base:
            raise BadInput(f"{cron_flags[0]} applies to a cron schedule; give --cron too")
        changed = dict(base)
        if flags.timezone is not None:
            changed["timezone"] = flags.timezone
        return {**changed, **_dst(flags)}
    return _UNCHANGED


def _dst(flags: TaskFlags) -> dict[str, str]:
    """The cron schedule's DST policies given as flags."""
    policies = {"dst_gap": flags.dst_gap, "dst_fold": flags.dst_fold}
    return {key: value for key, value in policies.items() if value is not None}


def _schedule_of(task: dict[str, Any] | None) -> Any:
    return None if task is None else task.get("schedule")


def _zone(schedule: Any) -> str | None:
    if isinstance(schedule, dict) and isinstance(schedule.get("timezone"), str):
        return str(schedule["timezone"])
    return None
