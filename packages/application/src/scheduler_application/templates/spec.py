"""The JSON shape of a template, as admins write it, and of a subscription to one.

A template::

    {"name": "weather-report", "description": "...", "executor": "http",
     "params": {"url": "https://api.example/weather?city={{city}}", "method": "GET"},
     "params_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false},
     "schedule": {"interval_seconds": 3600},
     "schedule_bounds": {"min_interval_seconds": 300, "allow_custom": true},
     "policies": {"queue": "vendor", "priority": 4, "retry": {"max_attempts": 3},
                  "timeout_seconds": 30, "spread_seconds": 600, "rate_limit": "100/s"}}

Errors are ValidationError naming the dotted key (``policies.retry.max_attempts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler_application.tasks.spec import parse_task_spec
from scheduler_application.templates.param_schema import check_schema
from scheduler_domain.errors import ValidationError
from scheduler_domain.executor_params import validate_executor
from scheduler_domain.schedules import Schedule, parse_schedule, schedule_to_spec
from scheduler_domain.template import POLICY_KEYS, ScheduleBounds, Template, placeholders

TEMPLATE_KEYS = frozenset(
    {
        "name",
        "description",
        "executor",
        "params",
        "params_schema",
        "schedule",
        "schedule_bounds",
        "policies",
    }
)
TEMPLATE_SERVER_KEYS = frozenset({"id", "version", "created_by", "created_at", "updated_at"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateSpec:
    name: str
    executor: str
    params: dict[str, Any] = field(default_factory=dict)
    params_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    description: str = ""
    schedule: Schedule | None = None
    bounds: ScheduleBounds = field(default_factory=ScheduleBounds)
    policies: dict[str, Any] = field(default_factory=dict)

    def template(self, *, created_by: str, now: datetime) -> Template:
        return Template(
            name=self.name,
            executor=self.executor,
            params=dict(self.params),
            params_schema=dict(self.params_schema),
            description=self.description,
            schedule=self.schedule,
            bounds=self.bounds,
            policies=dict(self.policies),
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )


def parse_template_spec(data: Any) -> TemplateSpec:
    """Validate an admin's mapping; ValidationError names the bad key."""
    if not isinstance(data, Mapping):
        raise ValidationError("a template must be a JSON object", field="body")
    for key in data:
        if key in TEMPLATE_SERVER_KEYS:
            raise ValidationError(f"{key} is set by the server and cannot be given", field=key)
        if key not in TEMPLATE_KEYS:
            raise ValidationError(
                f"unknown field {key!r}; expected one of {sorted(TEMPLATE_KEYS)}", field=str(key)
            )
    for required in ("name", "executor"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise ValidationError(f"{required} must be a non-empty string", field=required)
    params = data.get("params", {})
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ValidationError("params must be an object", field="params")
    _executor_name(data["executor"])
    schema = check_schema(data.get("params_schema", {"type": "object"}))
    declared = schema.get("properties", {})
    for name in sorted(placeholders(params)):
        if not isinstance(declared, Mapping) or name not in declared:
            raise ValidationError(
                f"params uses {{{{{name}}}}}, which params_schema.properties does not declare",
                field="params",
            )
    _no_placeholder_in_shell_command(data["executor"], params)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValidationError("description must be a string", field="description")
    policies = _policies(data.get("policies", {}))
    bounds = _bounds(data.get("schedule_bounds", {}))
    schedule = parse_schedule(data.get("schedule"))
    spec = TemplateSpec(
        name=data["name"],
        executor=data["executor"],
        params=dict(params),
        params_schema=schema,
        description=description,
        schedule=schedule,
        bounds=bounds,
        policies=policies,
    )
    spec.template(created_by="-", now=_EPOCH)  # validates name, description, default schedule
    return spec


def template_to_spec(template: Template) -> dict[str, Any]:
    """The canonical JSON form: ``parse_template_spec`` gives the same fields back."""
    return {
        "name": template.name,
        "description": template.description,
        "executor": template.executor,
        "params": dict(template.params),
        "params_schema": dict(template.params_schema),
        "schedule": schedule_to_spec(template.schedule),
        "schedule_bounds": {
            "min_interval_seconds": int(template.bounds.min_interval.total_seconds()),
            "allow_custom": template.bounds.allow_custom,
        },
        "policies": dict(template.policies),
    }


def merge_template_patch(current: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """PATCH: the keys given replace the template's; ``policies`` and ``schedule_bounds`` merge
    key by key (a policy set to null goes back to the task default)."""
    if not isinstance(patch, Mapping):
        raise ValidationError("a patch must be a JSON object", field="body")
    merged = dict(current)
    for key, value in patch.items():
        if key in ("policies", "schedule_bounds") and isinstance(value, Mapping):
            base = dict(current.get(key) or {})
            for name, item in value.items():
                if item is None and key == "policies":
                    base.pop(name, None)
                else:
                    base[name] = item
            merged[key] = base
        else:
            merged[key] = value
    return merged


def _executor_name(executor: str) -> None:
    """Only the name: a template's params hold placeholders, so the executor's own check runs
    on each subscription's filled-in params instead."""
    try:
        validate_executor(executor, {})
    except ValidationError as error:
        if error.field == "executor":
            raise


def _no_placeholder_in_shell_command(executor: str, params: Mapping[str, Any]) -> None:
    """A subscriber's value inside a command line a shell interprets would be a command
    injection: such a template must pass values as ``argv`` items or ``env`` variables."""
    if executor == "shell" and params.get("shell") is True and placeholders(params.get("command")):
        raise ValidationError(
            "a shell command line may not hold placeholders (a subscriber's value would be "
            "interpreted by the shell); pass values as argv items or env variables",
            field="params.command",
        )


def _policies(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("policies must be an object", field="policies")
    for key in value:
        if key not in POLICY_KEYS:
            raise ValidationError(
                f"unknown policy {key!r}; expected one of {sorted(POLICY_KEYS)}",
                field=f"policies.{key}",
            )
    try:
        parse_task_spec({"name": "template-check", "executor": "noop", **value})
    except ValidationError as error:
        raise ValidationError(error.message, field=f"policies.{error.field}") from None
    return dict(value)


def _bounds(value: Any) -> ScheduleBounds:
    if value is None:
        return ScheduleBounds()
    if not isinstance(value, Mapping):
        raise ValidationError("schedule_bounds must be an object", field="schedule_bounds")
    known = {"min_interval_seconds", "allow_custom"}
    for key in value:
        if key not in known:
            raise ValidationError(
                f"unknown field {key!r} in schedule_bounds; expected one of {sorted(known)}",
                field=f"schedule_bounds.{key}",
            )
    seconds = value.get("min_interval_seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
        raise ValidationError(
            "schedule_bounds.min_interval_seconds must be a non-negative integer",
            field="schedule_bounds.min_interval_seconds",
        )
    allow = value.get("allow_custom", True)
    if not isinstance(allow, bool):
        raise ValidationError(
            "schedule_bounds.allow_custom must be true or false",
            field="schedule_bounds.allow_custom",
        )
    if seconds > 366 * 86_400:
        raise ValidationError(
            "schedule_bounds.min_interval_seconds must be at most 31622400",
            field="schedule_bounds.min_interval_seconds",
        )
    return ScheduleBounds(min_interval=timedelta(seconds=seconds), allow_custom=allow)
