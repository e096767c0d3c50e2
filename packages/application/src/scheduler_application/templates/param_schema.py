"""A template's JSON Schema for its subscribers' parameters: checked once when the template is
written, then used to validate every subscription's and every trigger's parameters.

Schemas are written by admins and operators but applied to anyone's input, and they are
input themselves, so they are held to limits before the ``jsonschema`` library sees them:
at most :data:`MAX_SCHEMA_BYTES` of JSON, nested at most :data:`MAX_DEPTH` deep, and only
local references (``#/$defs/...``). A reference is never fetched: the registry the validator
resolves against refuses every retrieval, so even a reference that slipped past the check
could not make the server open a connection. Draft 2020-12 is used whatever ``$schema`` says;
``format`` is an annotation, not asserted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NoReturn

from jsonschema import Draft202012Validator
from jsonschema import ValidationError as SchemaViolation
from jsonschema.exceptions import SchemaError, best_match
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from scheduler_domain.errors import ValidationError

MAX_SCHEMA_BYTES = 64 * 1024
MAX_DEPTH = 32
#: The most parameters one subscription or trigger may carry, as JSON.
MAX_PARAMS_BYTES = 64 * 1024


def _refuse_retrieval(uri: str) -> NoReturn:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_NO_RETRIEVAL: Registry[Any] = Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]


def depth(value: Any, *, limit: int) -> int:
    """How deeply ``value`` nests (1 for a scalar), counted without recursion and given up
    past ``limit`` (returned as ``limit + 1``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return limit + 1
        if isinstance(item, Mapping):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, level + 1) for child in item)
    return deepest


def _refs(schema: Any) -> list[str]:
    found: list[str] = []
    stack = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, child in item.items():
                if key in ("$ref", "$dynamicRef") and isinstance(child, str):
                    found.append(child)
                else:
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def check_schema(schema: Any, *, field: str = "params_schema") -> dict[str, Any]:
    """The schema, if it is a valid Draft 2020-12 schema of an object within the limits;
    ValidationError naming ``field`` otherwise."""
    if not isinstance(schema, Mapping):
        raise ValidationError("params_schema must be a JSON Schema object", field=field)
    if depth(schema, limit=MAX_DEPTH) > MAX_DEPTH:
        raise ValidationError(f"params_schema nests deeper than {MAX_DEPTH} levels", field=field)
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError):
        raise ValidationError("params_schema must be plain JSON", field=field) from None
    if size > MAX_SCHEMA_BYTES:
        raise ValidationError(
            f"params_schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed",
            field=field,
        )
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise ValidationError(
                f"params_schema may only refer within itself ('#/$defs/...'), not to {ref!r}",
                field=f"{field}.$ref",
            )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = ".".join(str(part) for part in error.path)
        raise ValidationError(
            f"params_schema is not a valid JSON Schema: {error.message[:300]}",
            field=f"{field}.{where}" if where else field,
        ) from None
    if schema.get("type", "object") != "object":
        raise ValidationError(
            "params_schema must describe an object (type: object)", field=f"{field}.type"
        )
    return dict(schema)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json), registry=_NO_RETRIEVAL)


def with_defaults(schema: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the ``default`` of every top-level property it leaves out."""
    merged = dict(params)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, spec in properties.items():
            if name not in merged and isinstance(spec, Mapping) and "default" in spec:
                merged[name] = spec["default"]
    return merged


def validate_params(
    schema: Mapping[str, Any], params: Any, *, field: str = "params"
) -> dict[str, Any]:
    """``params`` with the schema's defaults filled in, if valid; ValidationError naming the
    offending parameter (``params.city``, ``params.stops.2``) otherwise."""
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ValidationError(f"{field} must be an object", field=field)
    if depth(params, limit=MAX_DEPTH) > MAX_DEPTH:
        raise ValidationError(f"{field} nest deeper than {MAX_DEPTH} levels", field=field)
    try:
        size = len(json.dumps(params))
    except (TypeError, ValueError):
        raise ValidationError(f"{field} must be plain JSON", field=field) from None
    if size > MAX_PARAMS_BYTES:
        raise ValidationError(
            f"{field} are {size} bytes of JSON; at most {MAX_PARAMS_BYTES} are allowed",
            field=field,
        )
    merged = with_defaults(schema, params)
    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        error = best_match(validator.iter_errors(merged))
    except Unresolvable as missing:
        raise ValidationError(
            f"the template's params_schema refers to {missing.ref!r}, which is not in it",
            field="params_schema",
        ) from None
    if error is not None:
        raise ValidationError(error.message[:500], field=_field_of(error, field))
    return merged


def _field_of(error: SchemaViolation, root: str) -> str:
    """The dotted path of the parameter the error is about: for a missing required property
    or an unexpected one, that property (``params.city``), not the object holding it."""
    path = [str(part) for part in error.absolute_path]
    instance = error.instance
    required = error.validator_value
    if (
        error.validator == "required"
        and isinstance(instance, Mapping)
        and isinstance(required, list)
    ):
        missing = [n for n in required if n not in instance]
        if missing:
            path.append(str(missing[0]))
    elif error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        extra = sorted(k for k in instance if k not in known)
        if extra:
            path.append(extra[0])
    return ".".join([root, *path])
