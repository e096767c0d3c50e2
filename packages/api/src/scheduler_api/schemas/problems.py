"""RFC 9457 problem details: the one shape of every error answer."""

from __future__ import annotations

import msgspec

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://scheduler.dev/problems/"


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``type`` is a stable URI per kind of problem and ``code`` its short name; ``field`` names
    the offending input (a dotted path for nested JSON, a parameter or header name otherwise)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    instance: str | None = None
    #: Worker heartbeat conflicts: the runs whose lease is gone and that the worker must stop.
    stop: list[str] | None = None
