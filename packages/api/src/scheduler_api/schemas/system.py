"""Health, readiness, queues and the system overview."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from scheduler_application.status_report import QueueStats


class HealthOut(msgspec.Struct, kw_only=True):
    status: str


class ReadinessOut(msgspec.Struct, kw_only=True):
    """``status`` is ``ready`` or ``unavailable``; ``checks`` says ``ok`` or what went wrong
    for each dependency."""

    status: str
    checks: dict[str, str]


class QueueOut(msgspec.Struct, kw_only=True):
    """``depth``: messages waiting in the broker (null when it did not answer). The other counts
    come from the database; ``created``/``finished`` cover the last ``window_seconds``."""

    name: str
    depth: int | None
    pending: int
    queued: int
    running: int
    created: int
    finished: int
    created_per_minute: float
    finished_per_minute: float
    #: When the longest-waiting queued run was queued (null: nothing queued).
    oldest_queued_at: datetime | None = None

    @classmethod
    def of(cls, stats: QueueStats) -> QueueOut:
        minutes = stats.window.total_seconds() / 60
        activity = stats.activity
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
            oldest_queued_at=activity.oldest_queued_at,
        )


class QueueList(msgspec.Struct, kw_only=True):
    items: list[QueueOut]
    window_seconds: float


class SystemOut(msgspec.Struct, kw_only=True):
    status: str
    version: str
    api_version: str
    time: datetime
    uptime_seconds: float
    checks: dict[str, str]
    config: dict[str, Any]
    runs_by_status: dict[str, int] | None
    workers_by_status: dict[str, int] | None
