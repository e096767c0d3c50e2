"""Cron means what crontab(5) means: a table of the cases, and random expressions checked against
cronsim and against a brute-force walk of the definition, in several time zones."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from cronsim import CronSim, CronSimError

from cron_reference import fires_between, random_expression
from scheduler_domain.cron import DAY_RULE_AND, DAY_RULE_OR, compile_cron
from scheduler_domain.errors import InvalidSchedule
from scheduler_domain.schedules import (
    CronSchedule,
    DstPolicy,
    FoldPolicy,
    GapPolicy,
    next_fire_times,
    slots_between,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


NEW_YEAR = utc(2025, 1, 1)  # a Wednesday

# expression: the next fires after 2025-01-01 00:00 UTC. Each of these fired otherwise before.
CHANGED = {
    # A one-value range is that value (croniter made it the whole field).
    "0 12-12 * * *": [utc(2025, 1, 1, 12), utc(2025, 1, 2, 12), utc(2025, 1, 3, 12)],
    "0 0 * * MON-MON": [utc(2025, 1, 6), utc(2025, 1, 13), utc(2025, 1, 20)],
    "0 0 1-1 * *": [utc(2025, 2, 1), utc(2025, 3, 1), utc(2025, 4, 1)],
    "0 0 * * SUN-SUN": [utc(2025, 1, 5), utc(2025, 1, 12)],
    "30 0 12-12 * * *": [utc(2025, 1, 1, 12, 0, 30), utc(2025, 1, 2, 12, 0, 30)],
    # Day-of-month */2 starts with '*': unrestricted, so it is AND-ed: odd days that are Mondays.
    "0 0 */2 * MON": [utc(2025, 1, 13), utc(2025, 1, 27), utc(2025, 2, 3)],
    # Day-of-week */2 (Sun, Tue, Thu, Sat) AND the 1st.
    "0 0 1 * */2": [utc(2025, 2, 1), utc(2025, 3, 1), utc(2025, 4, 1)],
    # Steps in day-of-week run to 7 = Sunday: 1/2 is Mon, Wed, Fri, Sun.
    "0 0 * * 1/2": [utc(2025, 1, 3), utc(2025, 1, 5), utc(2025, 1, 6), utc(2025, 1, 8)],
}
# The same before and after: pinned because the documentation promises them.
KEPT = {
    "0 0 *,15 * MON": [utc(2025, 1, 6), utc(2025, 1, 13), utc(2025, 1, 20)],  # starts with '*'
    "0 0 ? * MON": [utc(2025, 1, 6), utc(2025, 1, 13)],  # '?' is '*'
    "0 0 1 * ?": [utc(2025, 2, 1), utc(2025, 3, 1)],
    # Both restricted: OR.
    "0 0 1,15 * MON": [utc(2025, 1, 6), utc(2025, 1, 13), utc(2025, 1, 15), utc(2025, 1, 20)],
    "0 0 * * 1-7/2": [utc(2025, 1, 3), utc(2025, 1, 5), utc(2025, 1, 6), utc(2025, 1, 8)],
    "0 0 * * */3": [utc(2025, 1, 4), utc(2025, 1, 5), utc(2025, 1, 8)],  # Sun, Wed, Sat
    "0 0 * * 5-7": [utc(2025, 1, 3), utc(2025, 1, 4), utc(2025, 1, 5), utc(2025, 1, 10)],
    "0 0 * * 7": [utc(2025, 1, 5), utc(2025, 1, 12)],
    "0 0 * * FRI-SUN": [utc(2025, 1, 3), utc(2025, 1, 4), utc(2025, 1, 5), utc(2025, 1, 10)],
    "0 0 * * mon-sun": [utc(2025, 1, 2), utc(2025, 1, 3), utc(2025, 1, 4)],
    # A/S is A to the field's end, every S.
    "5/20 * * * *": [utc(2025, 1, 1, 0, 5), utc(2025, 1, 1, 0, 25), utc(2025, 1, 1, 0, 45)],
    "0 0 1 jan,Jul *": [utc(2025, 7, 1), utc(2026, 1, 1)],
}


@pytest.mark.parametrize(("expression", "expected"), [*CHANGED.items(), *KEPT.items()])
def test_expression_fires_as_crontab_means(expression: str, expected: list[datetime]) -> None:
    schedule = CronSchedule(expression)

    assert next_fire_times(schedule, NEW_YEAR, len(expected)) == expected


# expression: why it is refused. Each of these was accepted before.
NOW_REFUSED = {
    "R 3 * * *": "random",
    "0 R * * *": "random",
    "0 0 * * FRI-MON": "backwards",
    "0 0 * * 5-1": "backwards",
    "0 22-2 * * *": "backwards",
    "0 0 * NOV-FEB *": "backwards",
    "0 0 31 2-2 *": "never matches",
    "0 0 31 4,6 */2": "never matches",
    "0 0 L * *": "Quartz",
    "0 0 15W * *": "Quartz",
    "0 0 * * 5#2": "Quartz",
    "0 " + ",".join(["1"] * 600) + " * * *": "characters",
}
STILL_REFUSED = {
    "H 3 * * *": "hashed",
    "0 0 * * 5L": "Quartz",
    "0 0 30 2 *": "never matches",
    "@daily": "fields",
    "*/0 * * * *": "step",
    "0 0 * * 8": "outside",
    "0 0 0 * *": "outside",
    "0 0 * * MONDAY": "name",
    "0,,5 * * * *": "not a number",
}


@pytest.mark.parametrize(("expression", "reason"), [*NOW_REFUSED.items(), *STILL_REFUSED.items()])
def test_expression_crontab_would_not_run_as_written_is_refused(
    expression: str, reason: str
) -> None:
    with pytest.raises(InvalidSchedule, match=reason) as info:
        CronSchedule(expression)
    assert info.value.field == "schedule.cron"


def test_an_850_kb_expression_is_refused_before_any_work() -> None:
    expression = ",".join(str(i % 60) for i in range(300_000)) + " * * * *"

    began = time.perf_counter()
    with pytest.raises(InvalidSchedule, match="at most 1024") as info:
        CronSchedule(expression)

    assert time.perf_counter() - began < 0.5
    assert info.value.field == "schedule.cron"


@pytest.mark.parametrize(
    ("expression", "rule"),
    [
        ("0 0 1,15 * MON", DAY_RULE_OR),
        ("0 0 */2 * MON", DAY_RULE_AND),
        ("0 0 1 * */2", DAY_RULE_AND),
        ("0 0 * * *", DAY_RULE_AND),
        ("0 0 ? * MON", DAY_RULE_AND),
    ],
)
def test_schedule_says_how_its_day_fields_combine(expression: str, rule: str) -> None:
    assert CronSchedule(expression).day_rule == rule


def test_an_expression_is_compiled_once_and_reused() -> None:
    first = compile_cron("7 7 7 7 *", has_seconds=False)

    assert compile_cron("7 7 7 7 *", has_seconds=False) is first
    assert CronSchedule("7  7 7 7 *").next_after(NEW_YEAR) == utc(2025, 7, 7, 7, 7)


def test_next_fire_is_found_by_jumping_not_stepping_over_a_sparse_year() -> None:
    schedule = CronSchedule("59 59 23 29 2 *")  # the last second of leap days
    schedule.next_after(NEW_YEAR)

    began = time.perf_counter()
    for _ in range(100):
        fire = schedule.next_after(NEW_YEAR)

    assert fire == utc(2028, 2, 29, 23, 59, 59)
    assert time.perf_counter() - began < 0.5  # per-second stepping would take minutes


# -- against independent references ----------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Pacific/Chatham",
]


def _random_instant(rng: random.Random) -> datetime:
    return utc(2015, 1, 1) + timedelta(seconds=rng.randrange(16 * 365 * 86_400))


def test_random_expressions_agree_with_cronsim() -> None:
    """cronsim follows Debian cron: same grammar (without '?' and MON-SUN) and the same day rule."""
    rng = random.Random(20261204)
    compared = 0
    for _ in range(2000):
        expression = random_expression(rng, seconds=rng.random() < 0.3, portable=True)
        start = _random_instant(rng).replace(tzinfo=None)
        try:
            reference = CronSim(expression, start)
        except CronSimError:
            with pytest.raises(InvalidSchedule):
                CronSchedule(expression)
            continue
        expected = [next(reference).replace(tzinfo=UTC) for _ in range(5)]
        schedule = CronSchedule(expression)

        assert next_fire_times(schedule, start.replace(tzinfo=UTC), 5) == expected, expression
        compared += 1
    assert compared > 1700


def test_random_expressions_agree_with_a_brute_force_walk_in_several_zones() -> None:
    """Every minute (every second for six fields) of a few days, near and away from DST changes."""
    rng = random.Random(13)
    fired = 0
    for case in range(160):
        seconds = case % 6 == 0
        expression = random_expression(rng, seconds=seconds)
        try:
            schedule = CronSchedule(
                expression,
                rng.choice(ZONES),
                DstPolicy(gap=rng.choice(list(GapPolicy)), fold=rng.choice(list(FoldPolicy))),
            )
        except InvalidSchedule:
            continue  # never matches a real date; agreement on refusals is checked with cronsim
        start = _random_instant(rng)
        if case % 2:  # half of them start shortly before a transition of their zone
            start = _next_transition(schedule.timezone, start) - timedelta(hours=rng.randint(0, 20))
        elif case % 4 == 0:  # a quarter just before a fire, so that sparse expressions fire too
            fire = schedule.next_after(start)
            start = start if fire is None else fire - timedelta(seconds=rng.randint(1, 3600))
        step = timedelta(seconds=1) if seconds else timedelta(minutes=1)
        end = start + (timedelta(hours=1) if seconds else timedelta(days=1))
        expected = fires_between(
            expression,
            schedule.timezone,
            schedule.dst.gap.value,
            schedule.dst.fold.value,
            start,
            end,
            step=step,
        )

        assert slots_between(schedule, start, end, limit=100_000) == expected, (
            expression,
            schedule.timezone,
            start,
        )
        fired += bool(expected)
    assert fired > 40


def _next_transition(zone: str, after: datetime) -> datetime:
    """The next change of the zone's UTC offset after ``after`` (hour resolution), or ``after``."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    hour = after.replace(minute=0, second=0)
    offset = hour.astimezone(tz).utcoffset()
    for _ in range(366 * 24):
        hour += timedelta(hours=1)
        if hour.astimezone(tz).utcoffset() != offset:
            return hour
    return after


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("* * * * *", "UTC", utc(9999, 12, 31, 23, 58), utc(9999, 12, 31, 23, 59)),
        ("* * * * *", "UTC", utc(1, 1, 1), utc(1, 1, 1, 0, 1)),
        ("* * * * * *", "America/New_York", utc(9999, 12, 1), utc(9999, 12, 1, 0, 0, 1)),
        ("0 0 1 1 *", "Pacific/Chatham", utc(9999, 12, 1), None),
        ("0 0 29 2 */7", "Europe/Berlin", utc(2088, 3, 1), utc(2128, 2, 28, 23)),  # a Sunday
    ],
)
def test_the_ends_of_the_calendar_answer_without_raising(
    expression: str, zone: str, after: datetime, expected: datetime | None
) -> None:
    assert CronSchedule(expression, zone).next_after(after) == expected
