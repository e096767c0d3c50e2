"""UTC offsets of a time zone and the instants at which they change, found once and remembered.

zoneinfo answers "what is the offset at this instant?" but not "when does it next change?". The
changes are found by probing a day at a time and bisecting to the second, once per zone and
stretch of about a year (memoised), so a yearly cron does not probe hundreds of days per call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Offsets are assumed not to change twice (and cancel out) within one probe step; true of every
# zone in the tz database, whose transitions are months apart.
_PROBE_STEP = 86_400
_STRETCH = 1 << 25  # seconds (~388 days) whose transitions are found and remembered together
# Instants a day inside what datetime can represent in any zone: stretches are clipped to them.
_FIRST = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // _SECOND
_LAST = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // _SECOND


def utc_offset(zone: ZoneInfo, instant: int) -> int:
    """The zone's UTC offset, in seconds, at an epoch second."""
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    assert offset is not None  # zoneinfo always knows the offset of an instant
    return offset // _SECOND


def first_transition(zone: ZoneInfo, lo: int, hi: int) -> int | None:
    """The first instant in ``(lo, hi]`` whose UTC offset differs from the offset at ``lo``."""
    stretch = lo // _STRETCH
    while stretch * _STRETCH <= hi:
        for transition in _transitions(zone, stretch):
            if transition > hi:
                return None
            if transition > lo:
                return transition
        stretch += 1
    return None


@lru_cache(maxsize=4096)
def _transitions(zone: ZoneInfo, stretch: int) -> tuple[int, ...]:
    """Every instant ``t`` of the stretch with ``offset(t) != offset(t - 1)``, in order."""
    start = max(stretch * _STRETCH, _FIRST)
    end = min(stretch * _STRETCH + _STRETCH - 1, _LAST)  # last second of the stretch
    found: list[int] = []
    previous = start - 1
    offset = utc_offset(zone, previous)
    while previous < end:
        probe = min(previous + _PROBE_STEP, end)
        changed = utc_offset(zone, probe)
        if changed != offset:
            low = previous
            while probe - low > 1:
                middle = (low + probe) // 2
                if utc_offset(zone, middle) == offset:
                    low = middle
                else:
                    probe = middle
            found.append(probe)
            offset = changed
        previous = probe
    return tuple(found)
