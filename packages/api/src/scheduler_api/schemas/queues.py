"""Queues: depth and throughput, and the settings operators steer them with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from scheduler_application.operations.queue_control import UNSET, QueueChanges, QueueView
from scheduler_application.operations.status_report import QueueStats
from scheduler_domain.errors import ValidationError
from scheduler_domain.queue_settings import (
    DEFAULT_FAIR_IN_FLIGHT,
    Fairness,
    check_fair_in_flight,
    check_max_concurrency,
)
from scheduler_domain.rate_limit import RateLimit
from scheduler_domain.shared_limits import validate_limit_names

PATCH_FIELDS = ("rate_limit", "max_concurrency", "limits", "fairness", "fair_in_flight")


class QueueOut(msgspec.Struct, kw_only=True):
    """``depth``: messages waiting in the broker (null when it did not answer). The counts
    come from the database; ``created``/``finished`` cover the last ``window_seconds``.

    Settings: ``paused``; ``rate_limit`` and ``max_concurrency`` as stored for the queue (null:
    not set); ``effective_rate_limit`` is the limit in force, from ``rate_limit_source``
    (``queue``: the stored one, ``config``: ``dispatcher.queue_rate_limits``, null: none);
    ``updated_by``/``updated_at``: the last change (null if never changed)."""

    name: str
    depth: int | None
    pending: int
    queued: int
    running: int
    created: int
    finished: int
    created_per_minute: float
    finished_per_minute: float
    paused: bool
    rate_limit: str | None
    max_concurrency: int | None
    #: Named shared limits every run of the queue draws on.
    limits: list[str]
    #: ``fifo`` or ``fair`` (round-robin across owners / ``fairness_key`` within priority).
    fairness: str
    #: Under ``fair``: runs per fairness key queued or running at once.
    fair_in_flight: int
    effective_rate_limit: str | None
    rate_limit_source: str | None
    updated_by: str | None
    updated_at: datetime | None
    #: When the longest-waiting queued run was queued (null: nothing queued).
    oldest_queued_at: datetime | None = None

    @classmethod
    def of(cls, stats: QueueStats, view: QueueView) -> QueueOut:
        minutes = stats.window.total_seconds() / 60
        activity = stats.activity
        settings = view.settings
        return cls(
            name=stats.name,
            depth=stats.depth,
            pending=activity.pending,
            queued=activity.queued,
            running=activity.running,
            created=activity.created,
            finished=activity.finished,
            created_per_minute=round(activity.created / minutes, 3),
            finished_per_minute=round(activity.finished / minutes, 3),
            paused=settings.paused,
            rate_limit=None if settings.rate_limit is None else str(settings.rate_limit),
            max_concurrency=settings.max_concurrency,
            limits=list(settings.limits),
            fairness=settings.fairness.value,
            fair_in_flight=settings.fair_in_flight,
            effective_rate_limit=(
                None if view.effective_rate_limit is None else str(view.effective_rate_limit)
            ),
            rate_limit_source=view.rate_limit_source,
            updated_by=settings.updated_by or None,
            updated_at=settings.updated_at,
            oldest_queued_at=activity.oldest_queued_at,
        )


class QueueList(msgspec.Struct, kw_only=True):
    items: list[QueueOut]
    window_seconds: float


class PurgeOut(msgspec.Struct, kw_only=True):
    """``cancelled``: runs of the queue cancelled (pending and queued ones)."""

    queue: str
    cancelled: int


def queue_changes(data: Any) -> QueueChanges:
    """The body of ``PATCH /queues/{name}``: ``rate_limit`` (``"10/s"``) and/or
    ``max_concurrency`` (an integer); null clears a field, a field left out keeps its value."""
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", field="body")
    unknown = sorted(set(data) - set(PATCH_FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown field {unknown[0]!r}; a queue has {', '.join(PATCH_FIELDS)}",
            field=unknown[0],
        )
    if not data:
        raise ValidationError(
            f"nothing to change; send one of {', '.join(PATCH_FIELDS)}", field="body"
        )
    rate_limit: Any = UNSET
    if "rate_limit" in data:
        text = data["rate_limit"]
        rate_limit = None if text is None else RateLimit.parse(text)
    max_concurrency: Any = UNSET
    if "max_concurrency" in data:
        max_concurrency = check_max_concurrency(data["max_concurrency"])
    extra: dict[str, Any] = {}
    if "limits" in data:
        names = data["limits"]
        if names is None:
            names = []
        if not isinstance(names, list):
            raise ValidationError("limits must be a list of limit names", field="limits")
        extra["limits"] = validate_limit_names(names)
    if "fairness" in data:
        try:
            extra["fairness"] = Fairness(data["fairness"])
        except ValueError:
            raise ValidationError("fairness must be 'fifo' or 'fair'", field="fairness") from None
    if "fair_in_flight" in data:
        value = data["fair_in_flight"]
        extra["fair_in_flight"] = check_fair_in_flight(
            DEFAULT_FAIR_IN_FLIGHT if value is None else value
        )
    return QueueChanges(rate_limit=rate_limit, max_concurrency=max_concurrency, **extra)
