"""The JSON shape of a task, as clients write it, and its translation to and from the domain.

A spec is a plain mapping (what the API decodes, what the CLI reads from a file)::

    {"name": "nightly-report", "executor": "shell", "params": {"argv": ["echo", "hi"]},
     "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
     "retry": {"max_attempts": 3}, "timeout_seconds": 600, "depends_on": []}

Every key but ``name`` and ``executor`` has a default. ``secret_env`` is write-only: it says
what changes (``{"TOKEN": "value"}`` sets, ``{"TOKEN": null}`` removes; names left out keep
their value), and a task read back shows only ``secret_env_names``.

Errors are :class:`ValidationError` with ``field`` set to the dotted path of the offending key
(``retry.max_attempts``). Keys the server owns (``id``, ``owner_id``, ``version``, …) are
refused by name rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any, TypeVar

from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import is_env_name
from scheduler_domain.misfire import MisfireKind, MisfirePolicy
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.retry import RetryPolicy
from scheduler_domain.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    parse_schedule,
    schedule_to_spec,
)
from scheduler_domain.shared_limits import validate_limit_names
from scheduler_domain.task import DispatchStrategy, Task, TaskDefinition, TriggerRule

E = TypeVar("E", bound=StrEnum)

#: Set by the server only; a client sending one gets a ValidationError naming it.
SERVER_FIELDS = frozenset(
    {"id", "owner_id", "team_id", "version", "next_run_at", "created_at", "updated_at", "status"}
)
#: Accepted on writes and never shown: ``task_to_spec`` leaves them out (a task shows its
#: ``team_id``; ``team`` names the team to put it in, by name or id).
WRITE_ONLY_FIELDS = frozenset({"secret_env", "team"})
#: The longest team reference (a name or an id).
MAX_TEAM_REF = 100
#: Nested objects a PATCH merges key by key; every other key is replaced whole.
MERGED_ON_PATCH = frozenset({"retry", "misfire"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RETRY_KEYS = {
    "max_attempts": "max_attempts",
    "base_delay_seconds": "base_delay",
    "max_delay_seconds": "max_delay",
    "jitter_seconds": "jitter",
}
_MISFIRE_KEYS = {"policy": "kind", "catch_up_cap": "catch_up_cap", "grace_seconds": "grace"}
#: The longest value of one ``secret_env`` variable, in characters.
MAX_SECRET_VALUE = 32_768


@dataclass(slots=True, kw_only=True)
class TaskSpec(TaskDefinition):
    """Everything about a task that its owner decides (the fields of
    :class:`~scheduler_domain.task.TaskDefinition`, declared there once), and what the client
    asks of the server besides; the server adds id, owner and times."""

    #: What changes in the task's ``secret_env``, in plain text: a value sets the variable,
    #: None removes it; names not given keep their value. Not a task field: the task keeps
    #: the values sealed (see :class:`~scheduler_application.tasks.TaskService`).
    secret_env: dict[str, str | None] = field(default_factory=dict, repr=False)
    #: The team to put the task in (a name or id); None: the creator's personal team on
    #: creation, unchanged on update. Not a task field: resolved by the use case.
    team: str | None = None

    def task_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`Task` (and the attributes an update overwrites)."""
        values = {f.name: getattr(self, f.name) for f in fields(TaskDefinition)}
        values["params"] = dict(self.params)
        return values


def parse_task_spec(data: Mapping[str, Any]) -> TaskSpec:
    """Validate a client's mapping and fill in defaults; ValidationError names the bad key."""
    if not isinstance(data, Mapping):
        raise ValidationError("a task must be a JSON object", field="body")
    for key in data:
        if key in SERVER_FIELDS:
            raise ValidationError(f"{key} is set by the server and cannot be given", field=key)
        if key not in _PARSERS:
            raise ValidationError(
                f"unknown field {key!r}; expected one of {sorted(_PARSERS)}", field=str(key)
            )
    for required in ("name", "executor"):
        if data.get(required) is None:
            raise ValidationError(f"{required} is required", field=required)
    values = {_ATTRIBUTE.get(key, key): _PARSERS[key](value) for key, value in data.items()}
    spec = TaskSpec(**values)
    set_names = {name: "-" for name, value in spec.secret_env.items() if value is not None}
    Task(  # validates
        owner_id="-",
        created_at=_EPOCH,
        updated_at=_EPOCH,
        secret_env=set_names,
        **spec.task_fields(),
    )
    return spec


def task_to_spec(task: Task) -> dict[str, Any]:
    """The canonical JSON form of a task's spec, every field of
    :class:`~scheduler_domain.task.TaskDefinition` in its order: ``parse_task_spec`` gives the
    same fields back."""
    return {key: _shown(getattr(task, name)) for key, name in _spec_fields()}


@cache
def _spec_fields() -> tuple[tuple[str, str], ...]:
    """``(spec key, attribute)`` of every field of the spec, in order (read on every task
    shown: a task read is served from memory, so this is most of its cost)."""
    return tuple((_KEY.get(item.name, item.name), item.name) for item in fields(TaskDefinition))


#: Values a spec writes as they are (an enum is a ``str`` too, but not of exactly this type).
_AS_THEY_ARE = frozenset({bool, int, float, str, type(None)})


def _shown(value: Any) -> Any:
    """A field's value as a spec writes it (the inverse of its parser)."""
    if type(value) in _AS_THEY_ARE:
        return value
    match value:
        case StrEnum():
            return value.value
        case None | bool() | int() | float() | str():
            return value
        case timedelta():
            return _seconds_out(value)
        case frozenset():
            return sorted(value)
        case tuple():
            return list(value)
        case dict():
            return dict(value)
        case RateLimit():
            return str(value)
        case RetryPolicy():
            return {key: _shown(getattr(value, attr)) for key, attr in _RETRY_KEYS.items()}
        case MisfirePolicy():
            return {key: _shown(getattr(value, attr)) for key, attr in _MISFIRE_KEYS.items()}
        case CronSchedule() | IntervalSchedule() | OnceSchedule():
            return schedule_to_spec(value)
    raise TypeError(f"no JSON form for {type(value).__name__}")


def merge_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """PATCH semantics: only the keys given change; ``retry`` and ``misfire`` merge key by key."""
    if not isinstance(patch, Mapping):
        raise ValidationError("a patch must be a JSON object", field="body")
    merged = dict(current)
    for key, value in patch.items():
        if key in SERVER_FIELDS:
            raise ValidationError(f"{key} is set by the server and cannot be given", field=key)
        if key in MERGED_ON_PATCH and isinstance(value, Mapping):
            base = current.get(key)
            merged[key] = {**(base if isinstance(base, Mapping) else {}), **value}
        else:
            merged[key] = value
    return merged


# -- field parsers -------------------------------------------------------------------------------


def _string(name: str, *, allow_empty: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or (not allow_empty and not value):
            raise ValidationError(f"{name} must be a non-empty string", field=name)
        return value

    return parse


def _boolean(name: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError(f"{name} must be true or false", field=name)
        return value

    return parse


def _integer(name: str, *, nullable: bool = False) -> Callable[[Any], int | None]:
    def parse(value: Any) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"{name} must be an integer", field=name)
        return value

    return parse


def _seconds(name: str, *, nullable: bool = False) -> Callable[[Any], timedelta | None]:
    def parse(value: Any) -> timedelta | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValidationError(f"{name} must be a non-negative number of seconds", field=name)
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise ValidationError(f"{name} is too large", field=name) from None

    return parse


def _choice(enum: type[E], name: str) -> Callable[[Any], E]:
    def parse(value: Any) -> E:
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            raise ValidationError(f"{name} must be one of: {allowed}", field=name) from None

    return parse


def _params(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValidationError("params must be an object", field="params")
    return dict(value)


def _schedule(value: Any) -> Schedule | None:
    return parse_schedule(value)


def _labels(value: Any) -> frozenset[str]:
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(label, str) for label in value
    ):
        raise ValidationError("labels must be a list of strings", field="labels")
    return frozenset(value)


def _depends_on(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item for item in value
    ):
        raise ValidationError("depends_on must be a list of task ids or names", field="depends_on")
    return tuple(value)


def _limits(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValidationError("limits must be a list of limit names", field="limits")
    return validate_limit_names(value)


def _fairness_key(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValidationError("fairness_key must be a string or null", field="fairness_key")
    return value


def _secret_env(value: Any) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            "secret_env must be an object of NAME: value (null removes NAME)", field="secret_env"
        )
    changes: dict[str, str | None] = {}
    for name, item in value.items():
        if not is_env_name(name):
            raise ValidationError(
                f"{name!r} is not an environment variable name: letters, digits and '_', "
                "not starting with a digit",
                field="secret_env",
            )
        if item is not None and not isinstance(item, str):
            raise ValidationError(
                f"secret_env.{name} must be a string, or null to remove it",
                field=f"secret_env.{name}",
            )
        if item is not None and ("\x00" in item or len(item) > MAX_SECRET_VALUE):
            raise ValidationError(
                f"secret_env.{name} must be at most {MAX_SECRET_VALUE} characters, without NUL",
                field=f"secret_env.{name}",
            )
        changes[name] = item
    return changes


def _rate_limit(value: Any) -> RateLimit | None:
    return None if value is None else RateLimit.parse(value)


def _nested(
    value: Any, name: str, keys: Mapping[str, str], parsers: Mapping[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"{name} must be an object", field=name)
    for key in value:
        if key not in keys:
            raise ValidationError(
                f"unknown field {key!r} in {name}; expected one of {sorted(keys)}",
                field=f"{name}.{key}",
            )
    return {keys[key]: parsers[key](item) for key, item in value.items()}


def _renamed(error: ValidationError, keys: Mapping[str, str], name: str) -> ValidationError:
    """The domain names attributes (``retry.base_delay``); clients wrote JSON keys."""
    reverse = {f"{name}.{attr}": f"{name}.{key}" for key, attr in keys.items()}
    if error.field in reverse:
        return ValidationError(error.message, field=reverse[error.field])
    return error


def _retry(value: Any) -> RetryPolicy:
    parsers = {
        "max_attempts": _integer("retry.max_attempts"),
        "base_delay_seconds": _seconds("retry.base_delay_seconds"),
        "max_delay_seconds": _seconds("retry.max_delay_seconds"),
        "jitter_seconds": _seconds("retry.jitter_seconds"),
    }
    values = _nested(value, "retry", _RETRY_KEYS, parsers)
    defaults = RetryPolicy()
    if "base_delay" in values and "max_delay" not in values:
        values["max_delay"] = max(values["base_delay"], defaults.max_delay)
    try:
        return RetryPolicy(**values)
    except ValidationError as error:
        raise _renamed(error, _RETRY_KEYS, "retry") from None


def _misfire(value: Any) -> MisfirePolicy:
    parsers = {
        "policy": _choice(MisfireKind, "misfire.policy"),
        "catch_up_cap": _integer("misfire.catch_up_cap"),
        "grace_seconds": _seconds("misfire.grace_seconds"),
    }
    values = _nested(value, "misfire", _MISFIRE_KEYS, parsers)
    try:
        return MisfirePolicy(**values)
    except ValidationError as error:
        raise _renamed(error, _MISFIRE_KEYS, "misfire") from None


def _team(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEAM_REF:
        raise ValidationError(
            f"team must be a team's name or id (1-{MAX_TEAM_REF} characters)", field="team"
        )
    return value


def _seconds_out(value: timedelta | None) -> int | float | None:
    if value is None:
        return None
    seconds = value.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "name": _string("name"),
    "description": _string("description", allow_empty=True),
    "executor": _string("executor"),
    "params": _params,
    "schedule": _schedule,
    "enabled": _boolean("enabled"),
    "queue": _string("queue"),
    "priority": _integer("priority"),
    "labels": _labels,
    "strategy": _choice(DispatchStrategy, "strategy"),
    "timeout_seconds": _seconds("timeout_seconds", nullable=True),
    "retry": _retry,
    "concurrency": _choice(ConcurrencyPolicy, "concurrency"),
    "max_concurrent": _integer("max_concurrent", nullable=True),
    "misfire": _misfire,
    "spread_seconds": _seconds("spread_seconds"),
    "rate_limit": _rate_limit,
    "limits": _limits,
    "fairness_key": _fairness_key,
    "depends_on": _depends_on,
    "trigger_rule": _choice(TriggerRule, "trigger_rule"),
    "secret_env": _secret_env,
    "team": _team,
}
_ATTRIBUTE = {"timeout_seconds": "timeout", "spread_seconds": "spread"}
_KEY = {attribute: key for key, attribute in _ATTRIBUTE.items()}
