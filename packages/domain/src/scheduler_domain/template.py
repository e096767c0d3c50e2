"""Templates (task types): one definition many users subscribe to with their own parameters.

A template holds what every subscription shares — the executor, a *parameter template* (the
executor params with ``{{name}}`` placeholders), the policies — and what a subscriber may
choose: the parameters (checked against the template's JSON Schema by the application) and a
schedule within :class:`ScheduleBounds`. A subscription is an ordinary task carrying the
template's id and version and the subscriber's parameters; see ``docs/templates.md``.

Placeholders: a string that is exactly ``{{name}}`` becomes the parameter's value, of any JSON
type (``"{{count}}"`` → ``3``); a placeholder inside a longer string is replaced by the value's
text (strings as they are, anything else as JSON). Placeholders are filled in strings only,
never in keys, and the values filled in are not scanned again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any

from scheduler_domain.clock import ensure_utc
from scheduler_domain.cron import compile_cron
from scheduler_domain.errors import ValidationError
from scheduler_domain.ids import new_id
from scheduler_domain.schedules import (
    CronSchedule,
    FoldPolicy,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,99})\s*\}\}")
_WHOLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,99})\s*\}\}$")
_DAY = 86_400

#: The task-spec keys a template decides for its subscriptions (its "policies"); a
#: subscriber may not set them.
POLICY_KEYS = frozenset(
    {
        "queue",
        "priority",
        "labels",
        "strategy",
        "timeout_seconds",
        "retry",
        "concurrency",
        "max_concurrent",
        "misfire",
        "spread_seconds",
        "rate_limit",
        "limits",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleBounds:
    """What a subscriber may choose as schedule.

    ``min_interval``: no two slots closer than this (an interval schedule's interval; a cron
    expression's closest two wall-clock matches, see :func:`min_gap`). ``allow_custom``: False
    keeps every subscription on the template's default schedule.
    """

    min_interval: timedelta = timedelta(0)
    allow_custom: bool = True

    def __post_init__(self) -> None:
        if not timedelta(0) <= self.min_interval <= timedelta(days=366):
            raise ValidationError(
                "schedule_bounds.min_interval_seconds must be between 0 and 31622400",
                field="schedule_bounds.min_interval_seconds",
            )

    def check(self, schedule: Schedule | None, *, field_name: str = "schedule") -> None:
        """Raise ValidationError naming ``field_name`` when ``schedule`` fires more often
        than allowed."""
        if schedule is None or isinstance(schedule, OnceSchedule) or not self.min_interval:
            return
        gap = min_gap(schedule)
        if gap < self.min_interval:
            raise ValidationError(
                f"the schedule may fire every {_words(gap)}; this template allows at most "
                f"one run every {_words(self.min_interval)}",
                field=field_name,
            )
        if isinstance(schedule, CronSchedule) and schedule.dst.fold is FoldPolicy.BOTH:
            raise ValidationError(
                "dst_fold 'both' fires the repeated hour twice, closer than the template's "
                "minimum interval; use 'first' or 'last'",
                field=f"{field_name}.dst_fold",
            )


def min_gap(schedule: Schedule) -> timedelta:
    """The shortest time between two slots of ``schedule`` (a lower bound for cron).

    Interval: the interval. Cron: the closest two times of day the expression allows, the
    wrap-around from the day's last to the next day's first included as if every day matched
    (so the bound holds whichever days do); computed on wall-clock time. A DST fall-back with
    ``dst_fold: both`` can bring two slots closer once a year, which
    :meth:`ScheduleBounds.check` refuses separately. A one-off schedule has no second slot.
    """
    if isinstance(schedule, IntervalSchedule):
        return schedule.every
    if isinstance(schedule, CronSchedule):
        return timedelta(seconds=_cron_gap(schedule.expression, schedule.has_seconds))
    return timedelta(days=366 * 10_000)


@lru_cache(maxsize=1024)
def _cron_gap(expression: str, has_seconds: bool) -> int:
    cron = compile_cron(expression, has_seconds=has_seconds)
    times = sorted(
        h * 3600 + m * 60 + s for h in cron.hours for m in cron.minutes for s in cron.seconds
    )
    gaps = [b - a for a, b in pairwise(times)]
    gaps.append(times[0] + _DAY - times[-1])
    return min(gaps)


def _words(gap: timedelta) -> str:
    seconds = int(gap.total_seconds())
    for unit, size in (("day", _DAY), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def placeholders(value: Any) -> set[str]:
    """Every placeholder name used in the strings of ``value`` (nested)."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(_PLACEHOLDER.findall(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= placeholders(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= placeholders(item)
    return found


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """``template`` with its placeholders filled from ``values``; a placeholder without a
    value raises ValidationError naming ``params.<name>``."""
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole is not None:
            return _value(whole.group(1), values)
        return _PLACEHOLDER.sub(lambda m: _text(_value(m.group(1), values)), template)
    if isinstance(template, Mapping):
        return {key: render(item, values) for key, item in template.items()}
    if isinstance(template, list | tuple):
        return [render(item, values) for item in template]
    return template


def _value(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        raise ValidationError(
            f"parameter {name!r} is required (the template uses it)", field=f"params.{name}"
        )
    return values[name]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(slots=True, kw_only=True)
class Template:
    """A task type. ``defaults`` is the task spec every subscription starts from (executor,
    the parameter template as ``params``, description, schedule and the :data:`POLICY_KEYS`),
    in the JSON form of ``scheduler_application.tasks.spec``; the application validates it.
    Every change bumps ``version``."""

    name: str
    executor: str
    params: dict[str, Any] = field(default_factory=dict)
    params_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    description: str = ""
    schedule: Schedule | None = None
    bounds: ScheduleBounds = field(default_factory=ScheduleBounds)
    #: The policies (a subset of :data:`POLICY_KEYS`, in task-spec JSON form).
    policies: dict[str, Any] = field(default_factory=dict)
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int = 1
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValidationError(
                "name must be 1-200 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit",
                field="name",
            )
        if not isinstance(self.description, str) or len(self.description) > 2000:
            raise ValidationError("description is limited to 2000 characters", field="description")
        for key in self.policies:
            if key not in POLICY_KEYS:
                raise ValidationError(
                    f"unknown policy {key!r}; expected one of {sorted(POLICY_KEYS)}",
                    field=f"policies.{key}",
                )
        self.bounds.check(self.schedule, field_name="schedule")
        self.created_at = ensure_utc(self.created_at, field="created_at")
        self.updated_at = ensure_utc(self.updated_at, field="updated_at")

    def task_spec(
        self, *, name: str, values: Mapping[str, Any], schedule: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The task spec (JSON form) of a subscription named ``name`` whose parameters are
        ``values`` (already validated and with defaults) on ``schedule`` (its JSON form)."""
        return {
            **self.policies,
            "name": name,
            "description": self.description,
            "executor": self.executor,
            "params": render(self.params, values),
            "schedule": schedule,
        }
