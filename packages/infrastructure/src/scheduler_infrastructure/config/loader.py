"""Load :class:`Settings` from a TOML file and the environment, failing with one clear line.

Precedence: built-in defaults < the file named by ``SCHEDULER_CONFIG`` (default
``config/default.toml`` when it exists) < ``SCHEDULER__SECTION__KEY`` variables. Values from the
environment are read as TOML literals when they parse as one (``10``, ``true``,
``["a", "b"]``) and as plain strings otherwise.

A secret (``SECRETS``) may instead be read from a file named by the same variable with ``_FILE``
appended (``SCHEDULER__API__JWT_SECRET_FILE=/run/secrets/jwt_secret``): the Docker and
Kubernetes secrets convention, and the recommended form, since a file is not inherited by every
child process the way the environment is. The file's content is taken as it is, less one
trailing line break; setting both the variable and its ``_FILE`` is an error.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from scheduler_application.group_commit import MAX_WINDOW
from scheduler_domain.accounts import Role
from scheduler_domain.circuits import CircuitPolicy
from scheduler_domain.errors import ValidationError
from scheduler_domain.outbound import OutboundPolicy
from scheduler_domain.rate_limit import RateLimit
from scheduler_infrastructure.config.settings import SECRETS, Settings
from scheduler_infrastructure.errors import ConfigError

#: A queue's name, as a task's ``queue`` accepts it.
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

ENV_PREFIX = "SCHEDULER__"
FILE_SUFFIX = "_FILE"
DEFAULT_FILE = Path("config/default.toml")
RUN_MODES = ("api", "dispatcher", "worker")


def load_settings(
    environ: Mapping[str, str] | None = None, *, path: str | Path | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    raw, source = _read_file(path, env)
    for key in raw.get("_secret_keys_in_file", ()):
        raise ConfigError(
            key,
            "secrets may only come from the environment or a file named by "
            f"{secret_variable(key)}{FILE_SUFFIX}, not a config file",
        )
    raw.pop("_secret_keys_in_file", None)
    _apply_environment(raw, env)
    _apply_secret_files(raw, env)
    settings: Settings = _build(Settings, raw, prefix="")
    settings = dataclasses.replace(settings, source=source)
    _check(settings)
    return settings


def _read_file(path: str | Path | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    chosen = path or env.get("SCHEDULER_CONFIG")
    if chosen is None:
        if not DEFAULT_FILE.is_file():
            return {}, "built-in defaults"
        chosen = DEFAULT_FILE
    file = Path(chosen)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("SCHEDULER_CONFIG", f"no such file: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    secrets_found = [
        f"{section}.{key}"
        for section, values in data.items()
        if isinstance(values, dict)
        for key in values
        if f"{section}.{key}" in SECRETS
    ]
    for section in ("database", "rabbitmq", "redis"):
        url = data.get(section, {}).get("url") if isinstance(data.get(section), dict) else None
        if isinstance(url, str) and urlsplit(url).password:
            raise ConfigError(
                f"{section}.url",
                "a config file must not hold a password; set it in the environment instead",
            )
    data["_secret_keys_in_file"] = secrets_found
    return data, str(file)


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in _SECRET_FILE_VARIABLES:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ConfigError(name, "expected SCHEDULER__SECTION__KEY")
        *tables, key = parts
        target = raw
        for depth, table in enumerate(tables):
            target = target.setdefault(table, {})
            if not isinstance(target, dict):
                raise ConfigError(".".join(tables[: depth + 1]), "must be a table")
        target[key] = _parse_env_value(text)


def secret_variable(key: str) -> str:
    """``api.jwt_secret`` → ``SCHEDULER__API__JWT_SECRET``."""
    return ENV_PREFIX + key.upper().replace(".", "__")


_SECRET_FILE_VARIABLES = {secret_variable(key) + FILE_SUFFIX: key for key in SECRETS}


def forget_secret_variables(environ: MutableMapping[str, str]) -> list[str]:
    """Remove the secrets' own variables (``SCHEDULER__API__JWT_SECRET``, …; not their
    ``_FILE`` paths) from ``environ`` once the settings hold them, so that no process started
    later inherits them, even by mistake. The names removed."""
    removed = [secret_variable(key) for key in sorted(SECRETS) if secret_variable(key) in environ]
    for name in removed:
        del environ[name]
    return removed


def _apply_secret_files(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """``SCHEDULER__…_FILE`` variables: each secret read from the file it names."""
    for variable, key in sorted(_SECRET_FILE_VARIABLES.items()):
        path = env.get(variable)
        if path is None:
            continue
        if secret_variable(key) in env:
            raise ConfigError(
                variable, f"set either {secret_variable(key)} or {variable}, not both"
            )
        if not path.strip():
            raise ConfigError(variable, "must name a file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(variable, f"no such file: {path}") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError(variable, f"cannot read {path}: {reason}") from None
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        if not text:
            raise ConfigError(variable, f"{path} is empty")
        section, name = key.split(".")
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "must be a table")
        target[name] = text


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _build(cls: type[Any], raw: Any, *, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", "must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    for key in raw:
        if key not in known:
            where = f"{prefix}{key}"
            raise ConfigError(where, f"unknown {'key' if prefix else 'section'}")
    values: dict[str, Any] = {}
    for name in known:
        if name not in raw:
            continue
        hint = hints[name]
        key = f"{prefix}{name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], prefix=f"{key}.")
        else:
            values[name] = _coerce(raw[name], hint, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(key, f"must be one of {choices} (got {value!r})")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, "must be a list of strings")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (got {value!r})")
        return value
    raise ConfigError(key, f"unsupported setting type {hint!r}")  # pragma: no cover


def parse_run_mode(mode: str, *, key: str = "run.mode") -> tuple[str, ...]:
    """``all`` or a comma list of api, dispatcher, worker → the components, in start order."""
    parts = [p.strip() for p in mode.split(",") if p.strip()]
    if parts == ["all"]:
        return RUN_MODES
    unknown = [p for p in parts if p not in RUN_MODES]
    if not parts or unknown:
        raise ConfigError(
            key, f"must be 'all' or a comma list of api, dispatcher, worker (got {mode!r})"
        )
    return tuple(m for m in RUN_MODES if m in parts)


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0 (got {value})")


def _check_url(key: str, url: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ConfigError(key, f"must be a URL starting with {' or '.join(schemes)}")


def _check_executors(s: Settings) -> None:
    roles = {role.value for role in Role}
    for name in ("noop", "http", "shell", "python", "plugins"):
        for role in getattr(s.executors, name).roles:
            if role not in roles:
                raise ConfigError(
                    f"executors.{name}.roles",
                    f"{role!r} is not a role; expected some of {', '.join(sorted(roles))}",
                )
    for pattern in s.executors.python.allow:
        module, sep, function = pattern.partition(":")
        if not sep or not module or not function:
            raise ConfigError(
                "executors.python.allow",
                f"{pattern!r} is not a 'module:function' pattern ('*' may stand for any part)",
            )


def secrets_keys(key: str | None) -> list[str]:
    """``secrets.key`` as its keys, newest first: one key, or several comma-separated while a
    rotation is under way (the first encrypts, every one decrypts)."""
    return [part.strip() for part in (key or "").split(",") if part.strip()]


def _check_secrets_key(key: str | None) -> None:
    if key is None:
        return
    keys = secrets_keys(key)
    if not keys:
        raise ConfigError("secrets.key", "is empty")
    for number, part in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(part.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                "secrets.key",
                f"key {number} is not a Fernet key (32 url-safe base64-encoded bytes); make one "
                "with: python -c 'import base64, os; print(base64.urlsafe_b64encode("
                "os.urandom(32)).decode())'",
            )


def parse_circuit_hosts(
    entries: tuple[str, ...], *, key: str = "dispatcher.circuit_hosts"
) -> dict[str, CircuitPolicy]:
    """``["api.vendor.com=3/60"]`` → host → its circuit policy, or :class:`ConfigError`."""
    hosts: dict[str, CircuitPolicy] = {}
    for entry in entries:
        host, equals, text = entry.partition("=")
        threshold, slash, cool_down = text.partition("/")
        try:
            policy = CircuitPolicy(
                failure_threshold=int(threshold),
                cool_down=timedelta(seconds=float(cool_down)),
            )
        except ValueError:
            policy = None
        if (
            not equals
            or not slash
            or not host.strip()
            or policy is None
            or policy.failure_threshold < 1
            or policy.cool_down < timedelta(seconds=1)
        ):
            raise ConfigError(
                key,
                f"{entry!r} is not of the form 'HOST=THRESHOLD/COOL_DOWN_SECONDS', e.g. "
                "'api.vendor.com=3/60'",
            )
        hosts[host.strip().lower()] = policy
    return hosts


def parse_queue_rate_limits(
    entries: tuple[str, ...], *, key: str = "dispatcher.queue_rate_limits"
) -> dict[str, RateLimit]:
    """``["reports=10/s", "email=100/m"]`` → queue name → its limit, or :class:`ConfigError`
    naming ``key``."""
    limits: dict[str, RateLimit] = {}
    for entry in entries:
        queue, equals, text = entry.partition("=")
        queue = queue.strip()
        if not equals or not _QUEUE_NAME.match(queue):
            raise ConfigError(
                key, f"{entry!r} is not of the form 'QUEUE=LIMIT', e.g. 'reports=10/s'"
            )
        if queue in limits:
            raise ConfigError(key, f"queue {queue!r} is limited twice")
        try:
            limits[queue] = RateLimit.parse(text)
        except ValidationError as exc:
            raise ConfigError(key, exc.message) from None
    return limits


#: The role entry of ``api.rate_limits`` that covers every role not named.
ANY_ROLE = "*"


def parse_role_rate_limits(
    entries: tuple[str, ...], *, key: str = "api.rate_limits"
) -> dict[Role | None, RateLimit]:
    """``["user=50/s", "*=200/s"]`` → role (None for ``*``) → its request limit, or
    :class:`ConfigError` naming ``key``."""
    limits: dict[Role | None, RateLimit] = {}
    names = ", ".join([r.value for r in Role] + [ANY_ROLE])
    for entry in entries:
        name, equals, text = entry.partition("=")
        name = name.strip()
        if not equals:
            raise ConfigError(key, f"{entry!r} is not of the form 'ROLE=LIMIT', e.g. 'user=50/s'")
        if name != ANY_ROLE and name not in {r.value for r in Role}:
            raise ConfigError(key, f"{name!r} is not a role ({names})")
        role = None if name == ANY_ROLE else Role(name)
        if role in limits:
            raise ConfigError(key, f"role {name!r} is limited twice")
        try:
            limits[role] = RateLimit.parse(text)
        except ValidationError as exc:
            raise ConfigError(key, exc.message) from None
    return limits


def _check_outbound_allow(s: Settings) -> None:
    try:
        OutboundPolicy.from_allow(s.executors.http.allow, field="executors.http.allow")
    except ValidationError as exc:
        raise ConfigError("executors.http.allow", exc.message) from None
    try:
        OutboundPolicy.from_allow(s.events.webhooks.allow, field="events.webhooks.allow")
    except ValidationError as exc:
        raise ConfigError("events.webhooks.allow", exc.message) from None


def _check_task_isolation(s: Settings) -> None:
    if s.worker.task_network not in ("none", "host"):
        raise ConfigError(
            "worker.task_network", f"must be 'none' or 'host' (got {s.worker.task_network!r})"
        )
    first, dash, last = s.worker.task_uid_range.strip().partition("-")
    if not (dash and first.isdigit() and last.isdigit()):
        raise ConfigError(
            "worker.task_uid_range",
            f"must be FIRST-LAST, e.g. '1900000000-1900999999' (got {s.worker.task_uid_range!r})",
        )
    if not 0 < int(first) <= int(last) < 2**32 - 1:
        raise ConfigError(
            "worker.task_uid_range",
            f"must satisfy 0 < FIRST <= LAST < 4294967295 (got {s.worker.task_uid_range!r})",
        )
    if not os.path.isabs(s.worker.task_uid_lock_dir):
        raise ConfigError("worker.task_uid_lock_dir", "must be an absolute path")
    if s.worker.task_home_dir and not os.path.isabs(s.worker.task_home_dir):
        raise ConfigError("worker.task_home_dir", "must be an absolute path, or empty")


def _check_retention(s: Settings) -> None:
    r = s.retention
    for key, days in (
        ("retention.workers_days", r.workers_days),
        ("retention.runs_days", r.runs_days),
        ("retention.dead_letters_days", r.dead_letters_days),
        ("retention.slot_decisions_days", r.slot_decisions_days),
    ):
        if days < 0:
            raise ConfigError(key, f"must be 0 (kept for ever) or more days (got {days})")
    _positive("retention.batch_size", r.batch_size)
    _positive("retention.interval_seconds", r.interval_seconds)
    # A retired worker must have been offline for good, never merely silent for a while.
    if 0 < r.workers_days * 86_400 < 2 * s.worker.silence.total_seconds():
        raise ConfigError(
            "retention.workers_days",
            "must be 0 or at least twice the time a worker may stay silent "
            f"({2 * s.worker.silence.total_seconds():.0f} s)",
        )


def _check(s: Settings) -> None:
    """Cross-field rules the types alone cannot express."""
    _check_secrets_key(s.secrets.key)
    _check_url("database.url", s.database.url, ("sqlite+aiosqlite", "postgresql+asyncpg"))
    _positive("database.pool_size", s.database.pool_size)
    if s.queue.backend == "postgres" and not s.database.url.startswith("postgresql"):
        raise ConfigError("queue.backend", "'postgres' needs a PostgreSQL database.url")
    if s.queue.backend == "rabbitmq":
        _check_url("rabbitmq.url", s.rabbitmq.url, ("amqp", "amqps"))
    if s.redis.url or s.queue.backend == "redis":
        if not s.redis.url:
            raise ConfigError("redis.url", "the redis queue backend needs redis.url")
        _check_url("redis.url", s.redis.url, ("redis", "rediss", "unix"))
    parse_run_mode(s.run.mode)
    _positive("run.shutdown_timeout_seconds", s.run.shutdown_timeout_seconds)
    if not 0 < s.api.port < 65536:
        raise ConfigError("api.port", f"must be a TCP port (got {s.api.port})")
    if not 1 <= s.api.workers <= 64:
        raise ConfigError("api.workers", f"must be between 1 and 64 (got {s.api.workers})")
    if s.api.jwt_secret is not None and len(s.api.jwt_secret.encode()) < 32:
        raise ConfigError("api.jwt_secret", "must be at least 32 bytes long")
    for key, value in (
        ("api.access_token_ttl_seconds", s.api.access_token_ttl_seconds),
        ("api.refresh_token_ttl_seconds", s.api.refresh_token_ttl_seconds),
        ("api.max_body_bytes", s.api.max_body_bytes),
        ("api.max_page_size", s.api.max_page_size),
        ("api.bulk_max_items", s.api.bulk_max_items),
        ("api.batch_max_items", s.api.batch_max_items),
        ("dispatcher.batch_size", s.dispatcher.batch_size),
        ("dispatcher.max_sleep_seconds", s.dispatcher.max_sleep_seconds),
        ("dispatcher.relay_interval_seconds", s.dispatcher.relay_interval_seconds),
        ("dispatcher.reaper_interval_seconds", s.dispatcher.reaper_interval_seconds),
        ("dispatcher.requeue_after_seconds", s.dispatcher.requeue_after_seconds),
        ("worker.capacity", s.worker.capacity),
        ("worker.lease_seconds", s.worker.lease_seconds),
        ("worker.heartbeat_seconds", s.worker.heartbeat_seconds),
        ("worker.drain_timeout_seconds", s.worker.drain_timeout_seconds),
        ("worker.offline_after_seconds", s.worker.offline_after_seconds),
        ("dispatcher.gauge_interval_seconds", s.dispatcher.gauge_interval_seconds),
        ("events.prune_interval_seconds", s.events.prune_interval_seconds),
        ("events.prune_batch", s.events.prune_batch),
        ("events.heartbeat_seconds", s.events.heartbeat_seconds),
        ("events.poll_seconds", s.events.poll_seconds),
        ("events.webhooks.timeout_seconds", s.events.webhooks.timeout_seconds),
        ("events.webhooks.max_attempts", s.events.webhooks.max_attempts),
        ("events.webhooks.retry_base_seconds", s.events.webhooks.retry_base_seconds),
        ("events.webhooks.retry_max_seconds", s.events.webhooks.retry_max_seconds),
        ("events.webhooks.interval_seconds", s.events.webhooks.interval_seconds),
        ("events.webhooks.batch", s.events.webhooks.batch),
        ("events.webhooks.concurrency", s.events.webhooks.concurrency),
        ("events.publish.batch", s.events.publish.batch),
        ("events.publish.interval_seconds", s.events.publish.interval_seconds),
        ("events.publish.stream_maxlen", s.events.publish.stream_maxlen),
    ):
        _positive(key, value)
    longest_window_ms = MAX_WINDOW * 1000
    if not 0 <= s.worker.batch_window_ms <= longest_window_ms:
        raise ConfigError(
            "worker.batch_window_ms",
            f"must be between 0 and {longest_window_ms:g} (got {s.worker.batch_window_ms})",
        )
    if s.events.retention_days < 0:
        raise ConfigError("events.retention_days", "must be at least 0 (0: keep forever)")
    for key, port in (
        ("dispatcher.metrics_port", s.dispatcher.metrics_port),
        ("worker.metrics_port", s.worker.metrics_port),
    ):
        if not 0 <= port < 65536:
            raise ConfigError(key, f"must be a TCP port, or 0 for none (got {port})")
    ahead = s.dispatcher.fire_ahead_seconds
    if not 0 <= ahead < min(60.0, s.dispatcher.requeue_after_seconds):
        raise ConfigError(
            "dispatcher.fire_ahead_seconds",
            "must be at least 0 and less than 60 and than dispatcher.requeue_after_seconds"
            f" (got {ahead})",
        )
    if s.worker.heartbeat_seconds >= s.worker.lease_seconds:
        raise ConfigError("worker.heartbeat_seconds", "must be shorter than worker.lease_seconds")
    if not s.worker.queues:
        raise ConfigError("worker.queues", "must name at least one queue")
    _check_executors(s)
    _check_outbound_allow(s)
    parse_queue_rate_limits(s.dispatcher.queue_rate_limits)
    parse_circuit_hosts(s.dispatcher.circuit_hosts)
    if s.dispatcher.circuit_failure_threshold < 1:
        raise ConfigError("dispatcher.circuit_failure_threshold", "must be at least 1")
    if s.dispatcher.circuit_cool_down_seconds < 1:
        raise ConfigError("dispatcher.circuit_cool_down_seconds", "must be at least 1")
    parse_role_rate_limits(s.api.rate_limits)
    for key, value in (
        ("api.auth_cache_size", s.api.auth_cache_size),
        ("api.auth_cache_seconds", s.api.auth_cache_seconds),
        ("api.task_cache_size", s.api.task_cache_size),
        ("api.task_cache_seconds", s.api.task_cache_seconds),
    ):
        if value < 0:
            raise ConfigError(key, f"must be 0 or more (got {value})")
    for key, value in (
        ("worker.max_cpu_seconds", s.worker.max_cpu_seconds),
        ("worker.max_memory_bytes", s.worker.max_memory_bytes),
        ("worker.max_processes", s.worker.max_processes),
        ("worker.max_open_files", s.worker.max_open_files),
    ):
        if value < 0:
            raise ConfigError(key, f"must be 0 (no limit) or more (got {value})")
    _positive("worker.python_pool_size", s.worker.python_pool_size)
    _check_retention(s)
    _check_task_isolation(s)
    _positive("worker.python_max_runs_per_process", s.worker.python_max_runs_per_process)
    if s.telemetry.exporter.startswith("otlp") and not s.telemetry.otlp_endpoint:
        raise ConfigError("telemetry.otlp_endpoint", "is required for the otlp exporters")
    if not 0.0 <= s.telemetry.sample_ratio <= 1.0:
        raise ConfigError(
            "telemetry.sample_ratio", f"must be between 0 and 1 (got {s.telemetry.sample_ratio})"
        )
    for entry in s.telemetry.resource_attributes:
        key, sep, _ = entry.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                "telemetry.resource_attributes", f"{entry!r} is not of the form key=value"
            )
