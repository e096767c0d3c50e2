"""Subscriptions in a tasks file: what ``export`` writes for a task made from a template, and
what ``apply`` reads back, so that a subscription stays a subscription through a round trip.

An item::

    {"name": "weather-oslo", "template": "weather", "params": {"city": "Oslo"},
     "schedule": {"interval_seconds": 900}, "enabled": true,
     "depends_on": ["extract"], "trigger_rule": "all_success", "team": "ops"}

``schedule`` left out: the template's default schedule (the subscription follows it when the
template changes); ``null``: none (on demand). ``params`` are the subscriber's parameters, not the
executor params (those are the template's, filled in). ``depends_on``, ``trigger_rule`` and
``enabled`` are the task's own; ``team`` is used when the subscription is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler_application.tasks.spec import parse_task_spec
from scheduler_domain.errors import ValidationError
from scheduler_domain.schedules import parse_schedule, schedule_to_spec
from scheduler_domain.task import Task, TriggerRule
from scheduler_domain.template import Template

SUBSCRIPTION_FILE_KEYS = frozenset(
    {"name", "template", "params", "schedule", "enabled", "depends_on", "trigger_rule", "team"}
)
#: How a subscription on its template's default schedule shows in a plan.
TEMPLATE_DEFAULT = "(template default)"


def parse_subscription_items(document: Any, *, max_items: int) -> list[dict[str, Any]]:
    """The file's ``subscriptions`` (none without the key), each checked for its shape;
    errors name the item (``subscriptions[2].params``). Parameters are checked against the
    template's schema by the caller, which knows the template."""
    if not isinstance(document, Mapping) or "subscriptions" not in document:
        return []
    items = document["subscriptions"]
    if not isinstance(items, list):
        raise ValidationError("subscriptions must be a list", field="subscriptions")
    if len(items) > max_items:
        raise ValidationError(f"at most {max_items} subscriptions per file", field="subscriptions")
    parsed: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"subscriptions[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(f"{where} must be an object", field=where)
        for key in item:
            if key not in SUBSCRIPTION_FILE_KEYS:
                raise ValidationError(
                    f"unknown field {key!r}; a subscription has "
                    f"{', '.join(sorted(SUBSCRIPTION_FILE_KEYS))}",
                    field=f"{where}.{key}",
                )
        for required in ("name", "template"):
            if not isinstance(item.get(required), str) or not item[required]:
                raise ValidationError(
                    f"{required} must be a non-empty string", field=f"{where}.{required}"
                )
        if not isinstance(item.get("params", {}), Mapping):
            raise ValidationError("params must be an object", field=f"{where}.params")
        if not isinstance(item.get("enabled", True), bool):
            raise ValidationError("enabled must be true or false", field=f"{where}.enabled")
        own = {k: item[k] for k in ("depends_on", "trigger_rule", "team") if k in item}
        try:  # the task's own fields, as a task spec holds them
            parse_task_spec({"name": item["name"], "executor": "noop", **own})
        except ValidationError as error:
            raise ValidationError(error.message, field=f"{where}.{error.field}") from None
        spec = dict(item)
        if "team" not in spec and document.get("team") is not None:
            spec["team"] = document["team"]
        parsed.append(spec)
    return parsed


def subscription_to_file(
    task: Task, template: Template, upstream_names: Mapping[str, str]
) -> dict[str, Any]:
    """The file form of a subscription (``export``): what :func:`canonical_subscription`
    reads back unchanged."""
    item: dict[str, Any] = {
        "name": task.name,
        "template": template.name,
        "params": dict(task.template_params or {}),
        "enabled": task.enabled,
        "depends_on": sorted(upstream_names.get(u, u) for u in task.depends_on),
        "trigger_rule": task.trigger_rule.value,
    }
    if task.schedule != template.schedule:
        item["schedule"] = schedule_to_spec(task.schedule)
    return item


def canonical_subscription(item: Mapping[str, Any], template: Template) -> dict[str, Any]:
    """The fields a plan compares, defaults filled in (``schedule``: :data:`TEMPLATE_DEFAULT`
    when the item is on the template's default schedule, named or left out)."""
    schedule: Any = TEMPLATE_DEFAULT
    if "schedule" in item:
        chosen = parse_schedule(item["schedule"])
        if chosen != template.schedule:
            schedule = schedule_to_spec(chosen)
    return {
        "template": template.name,
        "params": dict(item.get("params") or {}),
        "schedule": schedule,
        "enabled": item.get("enabled", True),
        "depends_on": sorted(item.get("depends_on") or []),
        "trigger_rule": item.get("trigger_rule", TriggerRule.ALL_SUCCESS.value),
    }
