"""Cron expressions as crontab(5) means them, compiled once and matched against wall-clock time.

The grammar and the day rule are Vixie cron's (as in cronie and Debian cron): each field is a
list of ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S`` and ``A/S`` (= ``A-max/S``), with month and
weekday names; weekday 0 and 7 are both Sunday. Day-of-month and day-of-week are OR-ed only when
*both* are restricted; a field whose text starts with ``*`` (``*``, ``*/2``, ``*,5``) counts as
unrestricted and the two are AND-ed, as Vixie's ``DOM_STAR``/``DOW_STAR`` flags do.

What crontab does not have, or has only by accident, is refused rather than guessed at: ranges
that run backwards (Vixie silently never fires them), random or hashed values (``R``, ``H``: not
deterministic), Quartz's ``L``, ``W`` and ``#``, ``@`` macros. Times are naive wall-clock
seconds since 1970-01-01 00:00; mapping them to instants (and DST) is the schedule's job.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from scheduler_domain.errors import InvalidSchedule

MAX_EXPRESSION_LENGTH = 1024

_FIELD = "schedule.cron"
_DAY = 86_400
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_LAST_ORDINAL = date.max.toordinal()
_LAST_YEAR = 9999
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_LONGEST_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Bits 1..n set: the days of a month with n days.
_MONTH_BITS = tuple((1 << (n + 1)) - 2 for n in range(32))

DAY_RULE_OR = "day-of-month OR day-of-week (both restricted)"
DAY_RULE_AND = "day-of-month AND day-of-week (a field starting with '*' is unrestricted)"


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_SECOND = _FieldSpec("second", 0, 59)
_MINUTE = _FieldSpec("minute", 0, 59)
_HOUR = _FieldSpec("hour", 0, 23)
_DOM = _FieldSpec("day-of-month", 1, 31)
_MONTH = _FieldSpec("month", 1, 12, _MONTH_NAMES, 1)
_DOW = _FieldSpec("day-of-week", 0, 7, _DAY_NAMES, 0)


@dataclass(frozen=True, slots=True)
class CompiledCron:
    """A parsed expression: the allowed values of every field, and how days combine."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    dom_bits: int  # bit d set: day-of-month d allowed
    dow_bits: tuple[int, ...]  # per weekday of the 1st (0 = Sunday): the matching days' bits
    days_or: bool  # both day fields restricted: a day matches either

    @property
    def day_rule(self) -> str:
        return DAY_RULE_OR if self.days_or else DAY_RULE_AND

    def next_wall(self, wall: int) -> int | None:
        """The first matching wall time at or after ``wall`` (seconds), or ``None`` (year 9999)."""
        days, second_of_day = divmod(wall, _DAY)
        if not 0 < days + _EPOCH_ORDINAL <= _LAST_ORDINAL:
            return None
        today = date.fromordinal(days + _EPOCH_ORDINAL)
        time = self._time_at_or_after(second_of_day)
        if (
            time is not None
            and today.month in self.months
            and self._day_bits(today.year, today.month) >> today.day & 1
        ):
            return days * _DAY + time
        found = self._next_day(today.year, today.month, today.day + 1)
        if found is None:
            return None
        ordinal = date(*found).toordinal() - _EPOCH_ORDINAL
        return ordinal * _DAY + self.hours[0] * 3600 + self.minutes[0] * 60 + self.seconds[0]

    def _time_at_or_after(self, second_of_day: int) -> int | None:
        """The first allowed time of day at or after ``second_of_day``, carrying field by field."""
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        i = bisect_left(hours, hour)
        if i < len(hours) and hours[i] == hour:
            j = bisect_left(minutes, minute)
            if j < len(minutes) and minutes[j] == minute:
                k = bisect_left(seconds, second)
                if k < len(seconds):
                    return hour * 3600 + minute * 60 + seconds[k]
                j += 1
            if j < len(minutes):
                return hour * 3600 + minutes[j] * 60 + seconds[0]
            i += 1
        if i < len(hours):
            return hours[i] * 3600 + minutes[0] * 60 + seconds[0]
        return None

    def _next_day(self, year: int, month: int, day: int) -> tuple[int, int, int] | None:
        """The first matching date at or after the given one (``day`` may be past month's end)."""
        while year <= _LAST_YEAR:
            for candidate in self.months[bisect_left(self.months, month) :]:
                first = day if candidate == month else 1
                bits = self._day_bits(year, candidate) >> first
                if bits:
                    return year, candidate, first + (bits & -bits).bit_length() - 1
            year, month, day = year + 1, 1, 1
        return None

    def _day_bits(self, year: int, month: int) -> int:
        """Bit d set: day d of that month matches both day fields under the day rule."""
        length = _DAYS_IN_MONTH[month]
        if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
            length = 29
        weekday_of_first = (date(year, month, 1).weekday() + 1) % 7
        dom = self.dom_bits
        dow = self.dow_bits[weekday_of_first]
        return (dom | dow if self.days_or else dom & dow) & _MONTH_BITS[length]


def compile_cron(expression: str, *, has_seconds: bool) -> CompiledCron:
    """The compiled form of a whitespace-normalised expression; cached, so compiled once."""
    return _compile(expression, has_seconds)


@lru_cache(maxsize=4096)
def _compile(expression: str, has_seconds: bool) -> CompiledCron:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidSchedule(
            f"cron expression is {len(expression)} characters long; at most "
            f"{MAX_EXPRESSION_LENGTH} are allowed",
            field=_FIELD,
        )
    if expression.startswith("@"):
        raise InvalidSchedule(
            f"cron macro {expression.split(' ')[0]!r} is not supported; write the five fields "
            "(e.g. '0 0 * * *' for @daily)",
            field=_FIELD,
        )
    parts = expression.split(" ")
    if not has_seconds:
        parts.insert(0, "0")
    if len(parts) != 6:
        raise InvalidSchedule(
            f"cron expression {expression!r} has the wrong number of fields", field=_FIELD
        )
    second, minute, hour, dom, month, dow = parts
    dom_star = dom.startswith(("*", "?"))
    dow_star = dow.startswith(("*", "?"))
    months = _values(month, _MONTH)
    dom_values = _values(dom, _DOM, question_mark=True)
    dow_values = {value % 7 for value in _values(dow, _DOW, question_mark=True)}
    days_or = not dom_star and not dow_star
    if not days_or and not any(value <= _LONGEST_MONTH[m] for m in months for value in dom_values):
        raise InvalidSchedule(
            f"cron expression {expression!r} never matches a real date", field=_FIELD
        )
    return CompiledCron(
        seconds=tuple(sorted(_values(second, _SECOND))),
        minutes=tuple(sorted(_values(minute, _MINUTE))),
        hours=tuple(sorted(_values(hour, _HOUR))),
        months=tuple(sorted(months)),
        dom_bits=sum(1 << value for value in dom_values),
        dow_bits=tuple(
            sum(1 << day for day in range(1, 32) if (first + day - 1) % 7 in dow_values)
            for first in range(7)
        ),
        days_or=days_or,
    )


def _values(text: str, spec: _FieldSpec, *, question_mark: bool = False) -> set[int]:
    if question_mark and text == "?":
        return set(range(spec.low, spec.high + 1))
    values: set[int] = set()
    for item in text.split(","):
        values.update(_item(item, spec))
    return values


def _item(item: str, spec: _FieldSpec) -> range:
    span, slash, step_text = item.partition("/")
    step = 1
    if slash:
        step = _number(step_text, spec, item, what="step")
        if step == 0:
            raise _bad(spec, item, "a step must be at least 1")
    if span == "*":
        return range(spec.low, spec.high + 1, step)
    first_text, dash, last_text = span.partition("-")
    first = _value(first_text, spec, item)
    if dash:
        last = _value(last_text, spec, item)
        if spec is _DOW and last == 0 < first and last_text.lower() == "sun":
            last = 7  # SUN ending a range is day 7, so MON-SUN means Monday to Sunday
        if last < first:
            raise _bad(
                spec,
                item,
                "the range runs backwards; crontab does not wrap around, so write it as two "
                f"ranges, e.g. {first}-{spec.high},{spec.low}-{last}",
            )
    else:
        last = spec.high if slash else first
    return range(first, last + 1, step)


def _value(text: str, spec: _FieldSpec, item: str) -> int:
    lowered = text.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + spec.name_base
    value = _number(text, spec, item, what="value")
    if not spec.low <= value <= spec.high:
        raise _bad(spec, item, f"{value} is outside {spec.low}-{spec.high}")
    return value


def _number(text: str, spec: _FieldSpec, item: str, *, what: str) -> int:
    if not text or not text.isascii() or not text.isdigit() or len(text) > 4:
        raise _bad(spec, item, _explain(text, spec, what))
    return int(text)


def _explain(text: str, spec: _FieldSpec, what: str) -> str:
    upper = text.upper()
    if upper in ("R", "H") or upper.startswith(("R(", "H(")):
        return f"{text!r} picks a random or hashed value; schedules must be deterministic"
    if any(mark in upper for mark in ("L", "W", "#")) and spec in (_DOM, _DOW):
        return f"{text!r} is a Quartz extension (L, W, #) that crontab does not have"
    if spec.names:
        return f"{what} {text!r} is neither a number nor a name like {spec.names[0].upper()!r}"
    return f"{what} {text!r} is not a number"


def _bad(spec: _FieldSpec, item: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(f"cron {spec.name} field item {item!r}: {reason}", field=_FIELD)
