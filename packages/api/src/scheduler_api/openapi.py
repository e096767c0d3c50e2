"""The OpenAPI document: security schemes, the documented problem answers of each operation,
and the JSON schema of task bodies (which the handlers take as plain objects so that
``parse_task_spec`` stays the one validator)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Schema, SecurityScheme, Tag

from scheduler_api.schemas.problems import PROBLEM_MEDIA_TYPE, Problem
from scheduler_api.schemas.tasks import TaskSpecDocument
from scheduler_domain.template import POLICY_KEYS

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition

BEARER = "bearerAuth"
API_KEY = "apiKeyHeader"
#: Every authenticated operation accepts either credential.
SECURITY: list[dict[str, list[str]]] = [{BEARER: []}, {API_KEY: []}]

_DESCRIPTIONS = {
    400: "Malformed request (for example a body that is not JSON)",
    401: "Missing, invalid, expired or revoked credentials",
    403: "The caller's role may not do this",
    404: "No such object, or one the caller may not see",
    405: "Method not allowed on this resource",
    409: "Conflict with the object's current state",
    413: "Request body too large",
    422: "Invalid input; `field` names it",
    429: "Too many attempts; see Retry-After",
    503: "A dependency is unavailable",
}
#: What any authenticated operation may answer besides its own outcomes.
AUTHENTICATED = (400, 401, 403, 413, 422)


def problems(*statuses: int, public: bool = False) -> dict[int, ResponseSpec]:
    """Response specs for the problem answers an operation documents."""
    wanted = set(statuses) | ({400, 413, 422} if public else set(AUTHENTICATED))
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(status, "Problem"),
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in sorted(wanted)
    }


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """msgspec's schema with every ``$ref`` to ``$defs`` replaced by its target."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def task_body_schema(*, patch: bool) -> dict[str, Any]:
    """The task body's JSON schema, as ``schema_extra`` for a ``dict`` body."""
    raw = msgspec.json.schema(TaskSpecDocument)
    inlined = _inline(raw, raw.get("$defs", {}))
    inlined.pop("title", None)
    if patch:
        inlined.pop("required", None)
    inlined["additionalProperties"] = False
    return dict(inlined)


def tasks_file_schema() -> dict[str, Any]:
    """The JSON Schema of a tasks file (``scheduler apply -f``), for editors: the task body
    without ``secret_env`` (never applied from a file), in a ``tasks`` list."""
    task = task_body_schema(patch=False)
    task["properties"] = {k: v for k, v in task["properties"].items() if k != "secret_env"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Tasks file",
        "description": (
            "Tasks as code: `scheduler apply -f FILE` makes the caller's tasks exactly these "
            "(docs/tasks-as-code.md). Tasks are matched by name; depends_on may name tasks of "
            "the same file. Templates (admins and operators; docs/templates.md) are matched "
            "by name and applied first; named limits (operators and admins) before them."
        ),
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "version": {"type": "integer", "const": 1, "default": 1},
            "team": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "description": "The team (name or id) of every task that names none itself.",
            },
            "tasks": {"type": "array", "items": task},
            "templates": {"type": "array", "items": template_schema(task)},
            "limits": {"type": "array", "items": LIMIT_SCHEMA},
            "subscriptions": {"type": "array", "items": subscription_schema(task)},
        },
    }


def subscription_schema(task: dict[str, Any]) -> dict[str, Any]:
    """A subscription in a tasks file (docs/tasks-as-code.md, "Subscriptions")."""
    properties = task["properties"]
    return {
        "type": "object",
        "required": ["name", "template"],
        "additionalProperties": False,
        "properties": {
            "name": properties["name"],
            "template": {"type": "string", "minLength": 1, "description": "name or id"},
            "params": {
                "type": "object",
                "description": "The subscriber's parameters (the template's params_schema).",
            },
            "schedule": {
                **properties["schedule"],
                "description": "Left out: the template's default schedule (followed when it "
                "changes); null: none.",
            },
            "enabled": properties["enabled"],
            "depends_on": properties["depends_on"],
            "trigger_rule": properties["trigger_rule"],
            "team": properties["team"],
        },
    }


_RATE = {"type": ["string", "null"], "description": "<count>/<period>, e.g. 100/s, 5/m"}
#: A named shared limit in a tasks file (operators and admins; docs/api.md, "Shared limits").
LIMIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
        "description": {"type": "string", "maxLength": 500},
        "rate": _RATE,
        "partition_by": {"enum": ["owner", "task", None]},
        "partition_rate": _RATE,
        "max_concurrency": {"type": ["integer", "null"], "minimum": 1},
        "failure_threshold": {"type": ["integer", "null"], "minimum": 1},
        "cool_down_seconds": {"type": ["number", "null"], "minimum": 1, "maximum": 86400},
    },
}


def template_schema(task: dict[str, Any]) -> dict[str, Any]:
    """A template (docs/templates.md) in a tasks file: its policies are the task fields of the
    same names, so their schemas are the task body's."""
    properties = task["properties"]
    return {
        "type": "object",
        "required": ["name", "executor"],
        "additionalProperties": False,
        "properties": {
            "name": properties["name"],
            "description": properties["description"],
            "executor": properties["executor"],
            "params": {
                "type": "object",
                "description": "The executor params, with {{name}} placeholders for the "
                "subscribers' parameters.",
            },
            "params_schema": {
                "type": "object",
                "description": "JSON Schema (draft 2020-12) of the subscribers' parameters; "
                "local $ref only, at most 64 KiB and 32 levels deep.",
            },
            "schedule": properties["schedule"],
            "schedule_bounds": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "min_interval_seconds": {"type": "integer", "minimum": 0},
                    "allow_custom": {"type": "boolean"},
                },
            },
            "policies": {
                "type": "object",
                "additionalProperties": False,
                "properties": {key: properties[key] for key in sorted(POLICY_KEYS)},
            },
        },
    }


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's schema of a msgspec struct, stating what msgspec enforces and Litestar leaves
    out: closed objects (``additionalProperties: false``) for structs that refuse unknown
    fields, and the constraints of the strings in a list (``list[QueueName]``).

    Litestar has no public hook for this; its own struct plugin is extended (the document
    tests fail if it stops taking effect)."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        struct = field_definition.type_
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        (own,), defs = msgspec.json.schema_components([struct])
        declared = defs[own["$ref"].removeprefix("#/$defs/")].get("properties", {})
        for name, prop in (schema.properties or {}).items():
            items = declared.get(name, {}).get("items", {})
            if isinstance(prop, Schema) and isinstance(prop.items, Schema):
                _string_constraints(prop.items, items)
        return schema


def _string_constraints(target: Schema, source: dict[str, Any]) -> None:
    if source.get("type") != "string":
        return
    target.min_length = source.get("minLength", target.min_length)
    target.max_length = source.get("maxLength", target.max_length)
    target.pattern = source.get("pattern", target.pattern)


def openapi_config(*, version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Scheduler API",
        version=version,
        description=(
            "REST API of the distributed task scheduler. Authenticate with "
            "`Authorization: Bearer <access token>` (from `POST /api/v1/auth/login`), "
            "`Authorization: Bearer sk_…` or `X-API-Key: sk_…`. Errors are RFC 9457 "
            "`application/problem+json` documents."
        ),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin()],
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT or sk_ API key",
                    description="An access token from /api/v1/auth/login, or an API key",
                ),
                API_KEY: SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                ),
            }
        ),
        security=SECURITY,
        tags=[
            Tag(name="tasks", description="Task definitions, triggers and schedules"),
            Tag(name="runs", description="Runs: attempts of tasks"),
            Tag(name="workers", description="Registered workers"),
            Tag(name="queues", description="Queue depths and throughput"),
            Tag(name="system", description="Status, version and configuration"),
            Tag(name="auth", description="Log-in and tokens"),
            Tag(name="api-keys", description="Long-lived credentials"),
            Tag(name="users", description="User administration (admins)"),
            Tag(name="worker-protocol", description="For workers without database access"),
            Tag(name="health", description="Liveness and readiness"),
        ],
    )
