"""When a task fires: cron (with time zones and explicit DST rules), fixed intervals, or once.

Every schedule answers one question, ``next_after(instant)``: the earliest fire instant strictly
after it, as an aware UTC datetime, or ``None`` when it never fires again. The dispatcher stores
that answer as ``next_run_at``, so it must be deterministic and stable across restarts.

Cron expressions (:mod:`scheduler_domain.cron`, crontab's semantics) are matched against *local
wall-clock* time; mapping wall times to instants is done here with zoneinfo, so that the
spring-forward gap and the repeated fall-back hour follow the task's :class:`DstPolicy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeAlias, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler_domain.clock import ensure_utc
from scheduler_domain.cron import MAX_EXPRESSION_LENGTH, CompiledCron, compile_cron
from scheduler_domain.errors import InvalidSchedule, ValidationError
from scheduler_domain.zone_offsets import first_transition, utc_offset

_E = TypeVar("_E", bound=StrEnum)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# A cron with no year field repeats; the sparsest legal one (a fifth Monday of February) recurs
# within 40 years, so a match further away than this means the schedule cannot fire.
_SEARCH_YEARS = 50
_SEARCH_HORIZON = 366 * _SEARCH_YEARS * 86_400  # seconds


class GapPolicy(StrEnum):
    """What a wall time skipped by spring-forward does."""

    SHIFT = "shift"  # fire once, at the first instant after the gap
    SKIP = "skip"  # do not fire


class FoldPolicy(StrEnum):
    """Which instant(s) a wall time repeated by fall-back fires at."""

    FIRST = "first"
    LAST = "last"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class DstPolicy:
    """How cron wall times that daylight saving skips or repeats map to instants.

    Explicit rather than inherited from a library, so users can choose and previews can explain.
    """

    gap: GapPolicy = GapPolicy.SHIFT
    fold: FoldPolicy = FoldPolicy.FIRST

    def __post_init__(self) -> None:
        object.__setattr__(self, "gap", _coerce(GapPolicy, self.gap, "schedule.dst_gap"))
        object.__setattr__(self, "fold", _coerce(FoldPolicy, self.fold, "schedule.dst_fold"))


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression evaluated in an IANA time zone.

    Five fields (``min hour dom mon dow``) or six with the seconds field first
    (``sec min hour dom mon dow``, as in Quartz and Spring); the fields mean what crontab(5)
    says (see :mod:`scheduler_domain.cron`).
    """

    expression: str
    timezone: str = "UTC"
    dst: DstPolicy = field(default_factory=DstPolicy)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise InvalidSchedule("cron expression must be a string", field="schedule.cron")
        expression = " ".join(self.expression.split())
        if len(expression) > MAX_EXPRESSION_LENGTH:
            raise InvalidSchedule(
                f"cron expression is {len(expression)} characters long; at most "
                f"{MAX_EXPRESSION_LENGTH} are allowed",
                field="schedule.cron",
            )
        object.__setattr__(self, "expression", expression)
        fields = len(expression.split(" ")) if expression else 0
        if fields not in (5, 6):
            raise InvalidSchedule(
                f"cron expression {expression!r} has {fields} fields; expected 5 "
                "(min hour dom mon dow) or 6 (sec min hour dom mon dow)",
                field="schedule.cron",
            )
        self._compiled()
        _zone(self.timezone)
        if not isinstance(self.dst, DstPolicy):
            raise InvalidSchedule("dst must be a DstPolicy", field="schedule.dst")

    @property
    def has_seconds(self) -> bool:
        return self.expression.count(" ") == 5

    @property
    def day_rule(self) -> str:
        """How day-of-month and day-of-week combine for this expression, in words."""
        return self._compiled().day_rule

    def next_after(self, after: datetime) -> datetime | None:
        """Earliest fire instant strictly after ``after``, honouring the DST policy.

        Walks the instant line segment by segment of constant UTC offset: inside a segment wall
        time and instants move together, so the next wall match gives the next instant; at
        an offset change the gap (spring forward) or the repeated hour (fall back) is handled here.
        """
        lo = _whole_second_after(_require_aware(after, "after"))
        limit = lo + _SEARCH_HORIZON
        zone = _zone(self.timezone)
        cron = self._compiled()
        try:
            before, at = utc_offset(zone, lo - 1), utc_offset(zone, lo)
            if at > before and self._gap_fires(cron, lo, before, at):
                return _instant(lo)
            while lo < limit:
                offset = utc_offset(zone, lo)
                wall = cron.next_wall(lo + offset)
                if wall is None:
                    return None
                candidate = wall - offset
                transition = first_transition(zone, lo, min(candidate, limit))
                if transition is None:
                    if candidate >= limit:
                        return None
                    if self._fold_allows(zone, candidate):
                        return _instant(candidate)
                    lo = candidate + 1
                    continue
                later = utc_offset(zone, transition)
                if later > offset and self._gap_fires(cron, transition, offset, later):
                    return _instant(transition)
                lo = transition
        except (OverflowError, ValueError, OSError):  # beyond the years datetime can represent
            return None
        return None

    def _compiled(self) -> CompiledCron:
        return compile_cron(self.expression, has_seconds=self.has_seconds)

    def _gap_fires(self, cron: CompiledCron, transition: int, before: int, after: int) -> bool:
        """Whether some wall time skipped at ``transition`` matches and the policy shifts it."""
        if self.dst.gap is GapPolicy.SKIP:
            return False
        wall = cron.next_wall(transition + before)
        return wall is not None and wall < transition + after

    def _fold_allows(self, zone: ZoneInfo, instant: int) -> bool:
        local = datetime.fromtimestamp(instant, zone)
        if local.fold == 1:
            return self.dst.fold in (FoldPolicy.LAST, FoldPolicy.BOTH)
        ambiguous = local.replace(fold=1).timestamp() != instant
        return not ambiguous or self.dst.fold in (FoldPolicy.FIRST, FoldPolicy.BOTH)


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Fires at ``anchor + k * every``; a fixed default anchor keeps slots stable over restarts."""

    every: timedelta
    anchor: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.every, timedelta) or self.every < _SECOND:
            raise InvalidSchedule("interval must be at least one second", field="schedule.every")
        if self.every % _SECOND:
            raise InvalidSchedule("interval must be whole seconds", field="schedule.every")
        if self.anchor is not None:
            object.__setattr__(self, "anchor", _require_aware(self.anchor, "schedule.anchor"))

    def next_after(self, after: datetime) -> datetime | None:
        after = _require_aware(after, "after")
        anchor = _EPOCH if self.anchor is None else self.anchor
        steps = (after - anchor) // self.every + 1
        try:
            return anchor + steps * self.every
        except OverflowError:
            return None


@dataclass(frozen=True, slots=True)
class OnceSchedule:
    """Fires at ``at`` and never again (a one-off run planned ahead)."""

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _require_aware(self.at, "schedule.at"))

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > _require_aware(after, "after") else None


Schedule: TypeAlias = CronSchedule | IntervalSchedule | OnceSchedule


def next_fire_times(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    """Up to ``n`` fire instants after ``after``, for previews ("when will it run next?")."""
    _require_count(n, "n")
    times: list[datetime] = []
    cursor: datetime | None = after
    while len(times) < n and cursor is not None:
        cursor = schedule.next_after(cursor)
        if cursor is not None:
            times.append(cursor)
    return times


def slots_between(
    schedule: Schedule, start_exclusive: datetime, end_inclusive: datetime, *, limit: int
) -> list[datetime]:
    """The earliest ``limit`` slots in ``(start_exclusive, end_inclusive]``.

    ``limit`` bounds the work after a long outage: the misfire policy only needs the most
    recent few plus a count, never every minute of a week.
    """
    _require_count(limit, "limit")
    end = _require_aware(end_inclusive, "end_inclusive")
    slots: list[datetime] = []
    cursor: datetime | None = start_exclusive
    while len(slots) < limit:
        cursor = schedule.next_after(cursor) if cursor is not None else None
        if cursor is None or cursor > end:
            break
        slots.append(cursor)
    return slots


_CRON_KEYS = frozenset({"cron", "timezone", "dst_gap", "dst_fold"})
_INTERVAL_KEYS = frozenset({"interval_seconds", "anchor"})
_ONCE_KEYS = frozenset({"at"})
_KINDS = {"cron": _CRON_KEYS, "interval_seconds": _INTERVAL_KEYS, "at": _ONCE_KEYS}


def parse_schedule(spec: Mapping[str, object] | None) -> Schedule | None:
    """Build a schedule from the JSON form users write; ``None`` means "manual only"."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidSchedule("schedule must be an object", field="schedule")
    for key in spec:
        if not isinstance(key, str):
            raise InvalidSchedule(f"schedule key {key!r} is not a string", field="schedule")
    kinds = [kind for kind in _KINDS if kind in spec]
    if len(kinds) != 1:
        raise InvalidSchedule(
            "schedule needs exactly one of 'cron', 'interval_seconds' or 'at'", field="schedule"
        )
    kind = kinds[0]
    for key in spec:
        if key not in _KINDS[kind]:
            raise InvalidSchedule(
                f"unknown key {key!r} in a {kind!r} schedule", field=f"schedule.{key}"
            )
    if kind == "cron":
        return CronSchedule(
            _text(spec, "cron"),
            _text(spec, "timezone", "UTC"),
            DstPolicy(
                gap=_coerce(GapPolicy, spec.get("dst_gap", GapPolicy.SHIFT), "schedule.dst_gap"),
                fold=_coerce(
                    FoldPolicy, spec.get("dst_fold", FoldPolicy.FIRST), "schedule.dst_fold"
                ),
            ),
        )
    if kind == "interval_seconds":
        anchor = spec.get("anchor")
        parsed_anchor = None if anchor is None else _parse_instant(anchor, "schedule.anchor")
        try:
            every = timedelta(seconds=_interval_seconds(spec["interval_seconds"]))
            return IntervalSchedule(every, parsed_anchor)
        except InvalidSchedule as exc:  # point at the key the user wrote, not the attribute
            raise InvalidSchedule(exc.message, field="schedule.interval_seconds") from None
        except OverflowError:
            raise InvalidSchedule(
                "interval_seconds is too large", field="schedule.interval_seconds"
            ) from None
    return OnceSchedule(_parse_instant(spec["at"], "schedule.at"))


def schedule_to_spec(schedule: Schedule | None) -> dict[str, object] | None:
    """The canonical JSON form; ``parse_schedule(schedule_to_spec(s)) == s``."""
    if schedule is None:
        return None
    if isinstance(schedule, CronSchedule):
        return {
            "cron": schedule.expression,
            "timezone": schedule.timezone,
            "dst_gap": schedule.dst.gap.value,
            "dst_fold": schedule.dst.fold.value,
        }
    if isinstance(schedule, IntervalSchedule):
        spec: dict[str, object] = {"interval_seconds": schedule.every // _SECOND}
        if schedule.anchor is not None:
            spec["anchor"] = format_instant(schedule.anchor)
        return spec
    return {"at": format_instant(schedule.at)}


def format_instant(instant: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, the form the API and specs use."""
    text = _require_aware(instant, "instant").isoformat()
    return text.removesuffix("+00:00") + "Z"


def _parse_instant(value: object, field_name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidSchedule("expected an ISO 8601 timestamp string", field=field_name)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSchedule(f"{value!r} is not an ISO 8601 timestamp", field=field_name) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidSchedule(f"{value!r} has no UTC offset", field=field_name)
    return parsed.astimezone(UTC)


def _interval_seconds(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSchedule("interval_seconds must be a whole number", field="schedule.every")
    return value


def _text(spec: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str):
        raise InvalidSchedule(f"{key} must be a string", field=f"schedule.{key}")
    return value


def _coerce(enum: type[_E], value: object, field_name: str) -> _E:
    if isinstance(value, str) and value in {member.value for member in enum}:
        return enum(value)
    allowed = ", ".join(member.value for member in enum)
    raise InvalidSchedule(f"{value!r} is not one of: {allowed}", field=field_name)


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidSchedule("timezone must be an IANA zone name", field="schedule.timezone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(f"unknown time zone {name!r}", field="schedule.timezone") from None


def _require_aware(value: datetime, field_name: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(f"{field_name} must be a datetime", field=field_name)
    return ensure_utc(value, field=field_name)


def _require_count(value: int, field_name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{field_name} must be a non-negative integer", field=field_name)


def _whole_second_after(instant: datetime) -> int:
    """The smallest whole epoch second strictly greater than ``instant``."""
    return (instant - _EPOCH) // _SECOND + 1


def _instant(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)
