"""Named shared limits: one rate and concurrency budget that many tasks and queues draw on.

A limit is defined once by name (``vendor-api``) and referenced by name from tasks
(``Task.limits``) and queues (``QueueSettings.limits``). A run goes out only when every limit it
is bound to allows it:

* ``rate``: runs per period, all runs of the limit together (a token bucket);
* ``partition_by`` + ``partition_rate``: besides the global rate, a bucket per owner (or per
  task): "each owner 5/min, everyone together 100/s";
* ``max_concurrency``: runs queued or running at once, all of the limit's runs together;
* ``failure_threshold`` / ``cool_down``: the limit's circuit breaker
  (:mod:`scheduler_domain.circuits`); None takes the configured default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler_domain.clock import ensure_utc
from scheduler_domain.errors import ValidationError
from scheduler_domain.rate_limit import RateLimit

LIMIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Limits one task or queue may reference.
MAX_LIMITS = 16
MAX_LIMIT_CONCURRENCY = 1_000_000
MAX_FAILURE_THRESHOLD = 10_000
MAX_COOL_DOWN = timedelta(days=1)


class Partition(StrEnum):
    """What a limit's per-partition rate is counted by."""

    OWNER = "owner"
    TASK = "task"


def validate_limit_name(name: object, *, field: str = "name") -> str:
    if not isinstance(name, str) or not LIMIT_NAME.match(name):
        raise ValidationError(
            "a limit name is 1-100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            field=field,
        )
    return name


def validate_limit_names(names: Iterable[object], *, field: str = "limits") -> tuple[str, ...]:
    """A list of limit names as tasks and queues hold it: valid, each once, at most 16."""
    checked = tuple(validate_limit_name(name, field=field) for name in names)
    if len(set(checked)) != len(checked):
        raise ValidationError("limits lists a limit twice", field=field)
    if len(checked) > MAX_LIMITS:
        raise ValidationError(f"at most {MAX_LIMITS} limits", field=field)
    return checked


@dataclass(slots=True, kw_only=True)
class SharedLimit:
    name: str
    description: str = ""
    rate: RateLimit | None = None
    partition_by: Partition | None = None
    partition_rate: RateLimit | None = None
    max_concurrency: int | None = None
    failure_threshold: int | None = None
    cool_down: timedelta | None = None
    updated_by: str = ""
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate_limit_name(self.name)
        if len(self.description) > 500:
            raise ValidationError("description is limited to 500 characters", field="description")
        if (self.partition_by is None) != (self.partition_rate is None):
            raise ValidationError(
                "partition_by and partition_rate go together (e.g. owner, 5/m)",
                field="partition_rate" if self.partition_by is not None else "partition_by",
            )
        mc = self.max_concurrency
        if mc is not None and (
            isinstance(mc, bool) or not isinstance(mc, int) or not 1 <= mc <= MAX_LIMIT_CONCURRENCY
        ):
            raise ValidationError(
                f"max_concurrency must be between 1 and {MAX_LIMIT_CONCURRENCY}",
                field="max_concurrency",
            )
        ft = self.failure_threshold
        if ft is not None and (
            isinstance(ft, bool) or not isinstance(ft, int) or not 1 <= ft <= MAX_FAILURE_THRESHOLD
        ):
            raise ValidationError(
                f"failure_threshold must be between 1 and {MAX_FAILURE_THRESHOLD}",
                field="failure_threshold",
            )
        if (
            self.cool_down is not None
            and not timedelta(seconds=1) <= self.cool_down <= MAX_COOL_DOWN
        ):
            raise ValidationError(
                "cool_down_seconds must be between 1 and 86400", field="cool_down_seconds"
            )
        if self.updated_at is not None:
            self.updated_at = ensure_utc(self.updated_at, field="updated_at")

    @property
    def id(self) -> str:
        return self.name

    def partition_of(self, *, owner_id: str, task_id: str) -> str | None:
        """The partition a run of ``task_id`` owned by ``owner_id`` counts in (None: none)."""
        if self.partition_by is Partition.OWNER:
            return owner_id
        if self.partition_by is Partition.TASK:
            return task_id
        return None

    def touch(self, *, actor: str, now: datetime) -> None:
        self.updated_by = actor
        self.updated_at = ensure_utc(now, field="updated_at")
