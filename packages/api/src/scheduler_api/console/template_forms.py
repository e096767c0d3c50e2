"""The console's template forms, both ways: a template's parameters as form inputs (from its
JSON Schema) and the posted fields back into the JSON bodies the use cases take, so a bad value
is a ValidationError naming the same field the REST API would (``params.city``, ``policies``).

The subscribe form has one input per declared parameter (``param.<name>``): a text box for a
string, a number box for an integer or a number, a choice for a boolean or an ``enum``, and a
JSON box for anything else; an empty input is left out, so the schema's defaults apply and a
missing required parameter is refused by the schema, with its name. A schema declaring no
properties gets one JSON box for every parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler_domain.errors import ValidationError
from scheduler_domain.schedules import schedule_to_spec
from scheduler_domain.template import Template

PARAM_PREFIX = "param."
#: The one JSON box of a schema that declares no properties.
PARAMS_JSON = "params_json"
#: Characters a JSON box may hold (a template's schema is at most 64 KiB as JSON).
JSON_LIMIT = 65_536
_KINDS = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}


@dataclass(frozen=True, slots=True)
class ParamInput:
    """One parameter's input on the subscribe form."""

    name: str
    kind: str  # string, integer, number, boolean, enum, json
    required: bool
    description: str
    default: str
    choices: tuple[str, ...] = ()
    #: The JSON value of each choice.
    values: tuple[Any, ...] = ()

    @property
    def field(self) -> str:
        """The name errors give it (``params.<name>``)."""
        return f"params.{self.name}"

    @property
    def input_name(self) -> str:
        return f"{PARAM_PREFIX}{self.name}"


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def param_inputs(schema: Mapping[str, Any]) -> list[ParamInput]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return []
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    inputs = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        enum = spec.get("enum")
        kind = _KINDS.get(str(spec.get("type")), "json")
        values: tuple[Any, ...] = ()
        if isinstance(enum, list) and enum:
            kind, values = "enum", tuple(enum)
        elif kind == "boolean":
            values = (True, False)
        described = spec.get("description") or spec.get("title") or ""
        inputs.append(
            ParamInput(
                name=str(name),
                kind=kind,
                required=name in needed,
                description=str(described),
                default=_shown(spec["default"]) if "default" in spec else "",
                choices=tuple(_shown(v) for v in values),
                values=values,
            )
        )
    return inputs


def json_value(text: str, *, field: str, what: str = "JSON") -> Any:
    if len(text) > JSON_LIMIT:
        raise ValidationError(f"{field} is limited to {JSON_LIMIT} characters", field=field)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(f"{field} is not valid {what}: {error.msg}", field=field) from None


def _param_value(given: ParamInput, text: str) -> Any:
    field = given.field
    if given.kind == "string":
        return text
    if given.kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValidationError(f"{given.name} must be a whole number", field=field) from None
    if given.kind == "number":
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise ValidationError(f"{given.name} must be a number", field=field) from None
    if given.kind in ("boolean", "enum"):
        if text in given.choices:
            return given.values[given.choices.index(text)]
        return text  # not a choice: the schema refuses it, naming the parameter
    return json_value(text, field=field)


def subscription_body(template: Template, form: Mapping[str, str]) -> dict[str, Any]:
    """The body of ``POST /templates/{id}/subscriptions`` from the subscribe form."""
    params: dict[str, Any] = {}
    inputs = param_inputs(template.params_schema)
    if inputs:
        for given in inputs:
            text = form.get(given.input_name, "").strip()
            if text:
                params[given.name] = _param_value(given, text)
    elif (raw := form.get(PARAMS_JSON, "").strip()) != "":
        params = json_value(raw, field="params")
        if not isinstance(params, dict):
            raise ValidationError("params must be a JSON object", field="params")
    body: dict[str, Any] = {"params": params}
    name = form.get("name", "").strip()
    if name:
        body["name"] = name
    team = form.get("team", "").strip()
    if team:
        body["team"] = team
    schedule = _schedule(form)
    if schedule is not None:
        body["schedule"] = schedule
    return body


def _schedule(form: Mapping[str, str]) -> dict[str, Any] | None:
    """A chosen schedule: every N seconds, or a cron expression (in a zone); none: the
    template's default."""
    every = form.get("schedule_every", "").strip()
    cron = form.get("schedule_cron", "").strip()
    if every and cron:
        raise ValidationError(
            "choose every N seconds or a cron expression, not both", field="schedule"
        )
    if every:
        try:
            return {"interval_seconds": int(every)}
        except ValueError:
            raise ValidationError(
                "every must be a whole number of seconds", field="schedule.interval_seconds"
            ) from None
    if cron:
        zone = form.get("schedule_timezone", "").strip() or "UTC"
        return {"cron": cron, "timezone": zone}
    return None


def template_form(template: Template | None) -> dict[str, str]:
    """The template form's values: a template's, or the blank form's examples."""
    if template is None:
        return {
            "name": "",
            "description": "",
            "executor": "noop",
            "params": "{}",
            "params_schema": json.dumps({"type": "object", "properties": {}}, indent=2),
            "schedule": "",
            "min_interval_seconds": "0",
            "allow_custom": "on",
            "policies": "{}",
        }
    schedule = schedule_to_spec(template.schedule)
    return {
        "name": template.name,
        "description": template.description,
        "executor": template.executor,
        "params": json.dumps(template.params, indent=2),
        "params_schema": json.dumps(template.params_schema, indent=2),
        "schedule": "" if schedule is None else json.dumps(schedule),
        "min_interval_seconds": str(int(template.bounds.min_interval.total_seconds())),
        "allow_custom": "on" if template.bounds.allow_custom else "",
        "policies": json.dumps(template.policies, indent=2),
        "version": str(template.version),
    }


def template_body(form: Mapping[str, str], *, current: Template | None = None) -> dict[str, Any]:
    """The JSON of a template from its form (every field: the form shows the whole template).
    For a change, a policy left out of the box is cleared (PATCH merges policies key by key,
    so it is sent as null)."""
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", ""),
        "executor": form.get("executor", "").strip(),
    }
    for key in ("params", "params_schema", "policies"):
        text = form.get(key, "").strip()
        value = json_value(text, field=key) if text else {}
        if not isinstance(value, dict):
            raise ValidationError(f"{key} must be a JSON object", field=key)
        body[key] = value
    if not body["params_schema"]:
        body["params_schema"] = {"type": "object"}
    schedule = form.get("schedule", "").strip()
    body["schedule"] = json_value(schedule, field="schedule") if schedule else None
    seconds = form.get("min_interval_seconds", "").strip() or "0"
    try:
        minimum = int(seconds)
    except ValueError:
        raise ValidationError(
            "schedule_bounds.min_interval_seconds must be a whole number of seconds",
            field="schedule_bounds.min_interval_seconds",
        ) from None
    body["schedule_bounds"] = {
        "min_interval_seconds": minimum,
        "allow_custom": form.get("allow_custom") == "on",
    }
    if current is not None:
        for name in current.policies:
            body["policies"].setdefault(name, None)
    return body


def expected_version(form: Mapping[str, str]) -> int | None:
    text = form.get("version", "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise ValidationError("version must be the template's version number", field="version")
    return int(text)
