"""Health, readiness, queues and the system overview."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class HealthOut(msgspec.Struct, kw_only=True):
    status: str


class ReadinessOut(msgspec.Struct, kw_only=True):
    """``status`` is ``ready`` or ``unavailable``; ``checks`` says ``ok`` or what went wrong
    for each dependency."""

    status: str
    checks: dict[str, str]


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
