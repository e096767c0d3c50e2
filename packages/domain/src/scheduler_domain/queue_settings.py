"""What operators set on a queue: paused, a rate limit, a cap on runs in flight.

A queue has settings only once someone changed one; until then (and for whatever is left
unset) the configured defaults apply (``dispatcher.queue_rate_limits``). Precedence for the rate
limit: the stored setting, else the configured default, else none. A task's own rate limit and
``max_concurrent`` apply as well: a run goes out only when every limit it is under allows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from scheduler_domain.clock import ensure_utc
from scheduler_domain.errors import ValidationError
from scheduler_domain.rate_limit import RateLimit

QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Largest ``max_concurrency`` accepted (far above any fleet; keeps counts in an int column).
MAX_QUEUE_CONCURRENCY = 1_000_000


def validate_queue_name(name: object, *, field: str = "queue") -> str:
    """The rule every queue name follows (the same as a task's ``queue``)."""
    if not isinstance(name, str) or not QUEUE_NAME.match(name):
        raise ValidationError("queue must be 1-100 letters, digits, '.', '_' or '-'", field=field)
    return name


@dataclass(slots=True, kw_only=True)
class QueueSettings:
    """One queue's stored settings. ``rate_limit``/``max_concurrency`` None: not set here
    (the configured default, if any, applies to the rate limit; no cap on concurrency).
    ``updated_by``/``updated_at``: the last change, for the audit trail."""

    name: str
    paused: bool = False
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None
    updated_by: str = ""
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_queue_name(self.name, field="name")
        check_max_concurrency(self.max_concurrency)
        if self.updated_at is not None:
            self.updated_at = ensure_utc(self.updated_at, field="updated_at")

    @property
    def id(self) -> str:
        """Settings are keyed by the queue's name."""
        return self.name

    def touch(self, *, actor: str, now: datetime) -> None:
        self.updated_by = actor
        self.updated_at = ensure_utc(now, field="updated_at")


def check_max_concurrency(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("max_concurrency must be an integer or null", field="max_concurrency")
    if not 1 <= value <= MAX_QUEUE_CONCURRENCY:
        raise ValidationError(
            f"max_concurrency must be between 1 and {MAX_QUEUE_CONCURRENCY}",
            field="max_concurrency",
        )
    return value
