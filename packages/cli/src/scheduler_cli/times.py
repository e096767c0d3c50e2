"""Times typed on the command line: RFC 3339 instants or spans such as ``90s``, ``15m``, ``2h``,
``7d`` (before now for ``--since``, after now for ``--expires-in``), sent to the API in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from scheduler_cli.errors import BadInput

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def span(text: str, *, option: str) -> timedelta:
    match = _SPAN.match(text)
    if match is None:
        raise BadInput(f"{option} takes a span like 90s, 15m, 2h or 7d, not {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def instant(text: str, *, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{option} takes a time like 2030-01-01T00:00:00Z, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a local time, as the person typing it means it
    return moment.astimezone(UTC)


def since(text: str, *, option: str = "--since", now: datetime | None = None) -> str:
    """``--since 2h`` or ``--since 2030-01-01T00:00:00Z`` as an API time."""
    moment = (
        (now or datetime.now(UTC)) - span(text, option=option)
        if _SPAN.match(text)
        else instant(text, option=option)
    )
    return api_time(moment)


def later(text: str, *, option: str, now: datetime | None = None) -> str:
    """``--expires-in 30d`` as an API time."""
    return api_time((now or datetime.now(UTC)) + span(text, option=option))


def api_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
