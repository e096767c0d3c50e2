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
from enum import StrEnum

from scheduler_domain.clock import ensure_utc
from scheduler_domain.errors import ValidationError
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.shared_limits import validate_limit_names

QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Largest ``max_concurrency`` accepted (far above any fleet; keeps counts in an int column).
MAX_QUEUE_CONCURRENCY = 1_000_000
#: Runs per fairness key queued or running at once in a ``fair`` queue, unless set.
DEFAULT_FAIR_IN_FLIGHT = 10


class Fairness(StrEnum):
    """How a queue's backlog is served: ``fifo`` (priority, then age, whoever owns it) or
    ``fair`` (round-robin across owners, or tasks' ``fairness_key``, within priority)."""

    FIFO = "fifo"
    FAIR = "fair"


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
    #: Named shared limits every run of the queue draws on.
    limits: tuple[str, ...] = ()
    fairness: Fairness = Fairness.FIFO
    #: Under ``fair``: runs per fairness key queued or running at once; the rest wait, pending,
    #: and are released round-robin across keys.
    fair_in_flight: int = DEFAULT_FAIR_IN_FLIGHT
    updated_by: str = ""
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_queue_name(self.name, field="name")
        check_max_concurrency(self.max_concurrency)
        self.limits = validate_limit_names(self.limits)
        check_fair_in_flight(self.fair_in_flight)
        if self.updated_at is not None:
            self.updated_at = ensure_utc(self.updated_at, field="updated_at")

    @property
    def fair(self) -> bool:
        return self.fairness is Fairness.FAIR

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


def check_fair_in_flight(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise ValidationError("fair_in_flight must be between 1 and 100000", field="fair_in_flight")
    return value
