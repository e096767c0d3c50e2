"""Rate limits as users write them (``100/s``, ``5/10s``) and as a token bucket reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from scheduler_domain.errors import InvalidRateLimit

_SYNTAX = re.compile(r"(?P<count>\d+)\s*/\s*(?P<amount>\d*)\s*(?P<unit>[a-z]+)", re.IGNORECASE)
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
}
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` runs per ``period``.

    As a token bucket: it holds ``count`` tokens (bursts up to that size) and refills at
    ``per_second``.
    """

    count: int
    period: timedelta

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidRateLimit("rate limit count must be at least 1", field="rate_limit")
        if not isinstance(self.period, timedelta) or self.period < _SECOND:
            raise InvalidRateLimit("rate limit period must be at least 1s", field="rate_limit")
        if self.period % _SECOND:
            raise InvalidRateLimit("rate limit period must be whole seconds", field="rate_limit")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``<count>/<unit>`` or ``<count>/<n><unit>`` with units s, m, h (or their words)."""
        if not isinstance(text, str):
            raise InvalidRateLimit("rate limit must be a string like '10/m'", field="rate_limit")
        match = _SYNTAX.fullmatch(text.strip())
        if match is None:
            raise InvalidRateLimit(
                f"rate limit {text!r} is not of the form '<count>/<unit>' or '<count>/<n><unit>' "
                "(e.g. '100/s', '5/10s', '3/2m')",
                field="rate_limit",
            )
        unit = match["unit"].lower()
        if unit not in _UNIT_SECONDS:
            raise InvalidRateLimit(
                f"rate limit {text!r} has unknown unit {match['unit']!r}; use s, m or h",
                field="rate_limit",
            )
        amount = int(match["amount"]) if match["amount"] else 1
        if amount < 1:
            raise InvalidRateLimit(f"rate limit {text!r} has an empty period", field="rate_limit")
        try:
            period = timedelta(seconds=amount * _UNIT_SECONDS[unit])
        except OverflowError:
            raise InvalidRateLimit(
                f"rate limit {text!r} has a period too long", field="rate_limit"
            ) from None
        return cls(int(match["count"]), period)

    @property
    def per_second(self) -> float:
        return self.count / self.period.total_seconds()

    @property
    def capacity(self) -> int:
        return self.count

    def __str__(self) -> str:
        seconds = self.period // _SECOND
        for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
            if seconds % size == 0:
                amount = seconds // size
                return f"{self.count}/{amount if amount != 1 else ''}{unit}"
        raise AssertionError("unreachable: every period is a whole number of seconds")
