"""Cron schedules: wall-clock matching in a time zone, with explicit DST gap and fold policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from cron_reference import fires_between
from scheduler_domain.errors import InvalidSchedule, ValidationError
from scheduler_domain.schedules import (
    CronSchedule,
    DstPolicy,
    FoldPolicy,
    GapPolicy,
    next_fire_times,
    slots_between,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def cron(
    expression: str,
    zone: str = "UTC",
    *,
    gap: GapPolicy = GapPolicy.SHIFT,
    fold: FoldPolicy = FoldPolicy.FIRST,
) -> CronSchedule:
    return CronSchedule(expression, zone, DstPolicy(gap=gap, fold=fold))


# -- ordinary days --------------------------------------------------------------------------------


def test_daily_cron_fires_at_local_wall_time_in_winter_and_summer() -> None:
    schedule = cron("30 2 * * *", BERLIN)

    assert schedule.next_after(utc(2025, 1, 15, 12)) == utc(2025, 1, 16, 1, 30)
    assert schedule.next_after(utc(2025, 7, 15, 12)) == utc(2025, 7, 16, 0, 30)


def test_next_after_is_strictly_after_a_matching_instant() -> None:
    schedule = cron("0 * * * *")

    assert schedule.next_after(utc(2025, 5, 1, 10)) == utc(2025, 5, 1, 11)


def test_next_after_rounds_sub_second_input_up_to_the_next_whole_second_slot() -> None:
    schedule = cron("* * * * * *")

    after = utc(2025, 5, 1, 10, 0, 0).replace(microsecond=250_000)

    assert schedule.next_after(after) == utc(2025, 5, 1, 10, 0, 1)


def test_result_is_utc_even_when_input_is_in_another_offset() -> None:
    schedule = cron("0 12 * * *", BERLIN)
    after = datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=5)))  # 09:00Z

    result = schedule.next_after(after)

    assert result == utc(2025, 6, 1, 10)
    assert result is not None
    assert result.utcoffset() == timedelta(0)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        cron("* * * * *").next_after(datetime(2025, 1, 1))
    assert info.value.field == "after"


# -- six fields, seconds first --------------------------------------------------------------------


def test_six_field_expression_reads_seconds_first() -> None:
    schedule = cron("*/15 * * * * *")

    assert next_fire_times(schedule, utc(2025, 1, 1, 0, 0, 50), 4) == [
        utc(2025, 1, 1, 0, 1, 0),
        utc(2025, 1, 1, 0, 1, 15),
        utc(2025, 1, 1, 0, 1, 30),
        utc(2025, 1, 1, 0, 1, 45),
    ]
    assert schedule.has_seconds


def test_six_field_expression_with_fixed_second_minute_and_hour() -> None:
    schedule = cron("10 5 3 * * *", BERLIN)

    assert schedule.next_after(utc(2025, 1, 1)) == utc(2025, 1, 1, 2, 5, 10)


def test_five_field_expression_fires_on_the_minute() -> None:
    schedule = cron("*/20 * * * *")

    assert next_fire_times(schedule, utc(2025, 1, 1, 0, 0, 1), 2) == [
        utc(2025, 1, 1, 0, 20),
        utc(2025, 1, 1, 0, 40),
    ]
    assert not schedule.has_seconds


# -- spring forward: Europe/Berlin 2025-03-30, 02:00 CET -> 03:00 CEST (01:00Z) -------------------


def test_shift_policy_fires_once_at_end_of_spring_gap() -> None:
    schedule = cron("30 2 * * *", BERLIN, gap=GapPolicy.SHIFT)

    assert next_fire_times(schedule, utc(2025, 3, 29, 12), 3) == [
        utc(2025, 3, 30, 1, 0),  # 03:00+02:00, the first instant after the gap
        utc(2025, 3, 31, 0, 30),
        utc(2025, 4, 1, 0, 30),
    ]


def test_shift_policy_fires_at_transition_when_after_is_just_before_it() -> None:
    schedule = cron("30 2 * * *", BERLIN, gap=GapPolicy.SHIFT)

    assert schedule.next_after(utc(2025, 3, 30, 0, 59, 59)) == utc(2025, 3, 30, 1, 0)
    assert schedule.next_after(utc(2025, 3, 30, 1, 0)) == utc(2025, 3, 31, 0, 30)


def test_skip_policy_drops_wall_time_inside_spring_gap() -> None:
    schedule = cron("30 2 * * *", BERLIN, gap=GapPolicy.SKIP)

    assert next_fire_times(schedule, utc(2025, 3, 28, 12), 3) == [
        utc(2025, 3, 29, 1, 30),
        utc(2025, 3, 31, 0, 30),
        utc(2025, 4, 1, 0, 30),
    ]


def test_shift_policy_collapses_several_gap_slots_into_one_fire() -> None:
    schedule = cron("*/15 * * * *", BERLIN, gap=GapPolicy.SHIFT)

    fires = slots_between(schedule, utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30), limit=100)

    # 01:45 CET, then 02:00-02:45 (in the gap) and 03:00 CEST all map to 01:00Z: one fire.
    assert fires == [
        utc(2025, 3, 30, 0, 45),
        utc(2025, 3, 30, 1, 0),
        utc(2025, 3, 30, 1, 15),
        utc(2025, 3, 30, 1, 30),
    ]


def test_skip_policy_on_quarter_hour_cron_still_fires_at_first_valid_wall_time() -> None:
    schedule = cron("*/15 * * * *", BERLIN, gap=GapPolicy.SKIP)

    fires = slots_between(schedule, utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30), limit=100)

    # 03:00 CEST is a real wall time, so the skip policy loses nothing on a quarter-hour cron.
    assert fires == [
        utc(2025, 3, 30, 0, 45),
        utc(2025, 3, 30, 1, 0),
        utc(2025, 3, 30, 1, 15),
        utc(2025, 3, 30, 1, 30),
    ]


# -- fall back: Europe/Berlin 2025-10-26, 03:00 CEST -> 02:00 CET (01:00Z) ------------------------


def test_first_fold_policy_fires_at_first_occurrence_of_repeated_hour() -> None:
    schedule = cron("30 2 * * *", BERLIN, fold=FoldPolicy.FIRST)

    assert next_fire_times(schedule, utc(2025, 10, 25, 12), 2) == [
        utc(2025, 10, 26, 0, 30),  # 02:30+02:00
        utc(2025, 10, 27, 1, 30),
    ]


def test_last_fold_policy_fires_at_second_occurrence_of_repeated_hour() -> None:
    schedule = cron("30 2 * * *", BERLIN, fold=FoldPolicy.LAST)

    assert next_fire_times(schedule, utc(2025, 10, 25, 12), 2) == [
        utc(2025, 10, 26, 1, 30),  # 02:30+01:00
        utc(2025, 10, 27, 1, 30),
    ]


def test_both_fold_policy_fires_at_each_occurrence_of_repeated_hour() -> None:
    schedule = cron("30 2 * * *", BERLIN, fold=FoldPolicy.BOTH)

    assert next_fire_times(schedule, utc(2025, 10, 25, 12), 3) == [
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 10, 27, 1, 30),
    ]


def test_both_fold_policy_started_between_occurrences_returns_the_second() -> None:
    schedule = cron("30 2 * * *", BERLIN, fold=FoldPolicy.BOTH)

    assert schedule.next_after(utc(2025, 10, 26, 0, 40)) == utc(2025, 10, 26, 1, 30)


def test_first_fold_policy_started_inside_second_pass_does_not_fire_again_that_day() -> None:
    schedule = cron("30 2 * * *", BERLIN, fold=FoldPolicy.FIRST)

    assert schedule.next_after(utc(2025, 10, 26, 1, 10)) == utc(2025, 10, 27, 1, 30)


QUARTER_HOUR_FALL_BACK = {
    FoldPolicy.FIRST: [
        utc(2025, 10, 26, 0, 0),  # 02:00+02:00
        utc(2025, 10, 26, 0, 15),
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 0, 45),
        utc(2025, 10, 26, 2, 0),  # 03:00+01:00
    ],
    FoldPolicy.LAST: [
        utc(2025, 10, 26, 1, 0),  # 02:00+01:00
        utc(2025, 10, 26, 1, 15),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 10, 26, 1, 45),
        utc(2025, 10, 26, 2, 0),
    ],
    FoldPolicy.BOTH: [
        utc(2025, 10, 26, 0, 0),
        utc(2025, 10, 26, 0, 15),
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 0, 45),
        utc(2025, 10, 26, 1, 0),
        utc(2025, 10, 26, 1, 15),
        utc(2025, 10, 26, 1, 30),
        utc(2025, 10, 26, 1, 45),
        utc(2025, 10, 26, 2, 0),
    ],
}


@pytest.mark.parametrize("fold", list(FoldPolicy))
def test_quarter_hour_cron_through_repeated_hour_follows_fold_policy(fold: FoldPolicy) -> None:
    schedule = cron("*/15 * * * *", BERLIN, fold=fold)

    fires = slots_between(schedule, utc(2025, 10, 25, 23, 50), utc(2025, 10, 26, 2, 0), limit=100)

    assert fires == QUARTER_HOUR_FALL_BACK[fold]


def test_both_fold_policy_keeps_quarter_hour_slots_evenly_spaced_through_the_fold() -> None:
    schedule = cron("*/15 * * * *", BERLIN, fold=FoldPolicy.BOTH)

    fires = slots_between(schedule, utc(2025, 10, 25, 22), utc(2025, 10, 26, 4), limit=100)

    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(fires))


# -- America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT (07:00Z),
# 2025-11-02 02:00 EDT -> 01:00 EST (06:00Z) ------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (GapPolicy.SHIFT, [utc(2025, 3, 9, 7, 0), utc(2025, 3, 10, 6, 30)]),
        (GapPolicy.SKIP, [utc(2025, 3, 10, 6, 30), utc(2025, 3, 11, 6, 30)]),
    ],
)
def test_new_york_spring_gap_follows_gap_policy(gap: GapPolicy, expected: list[datetime]) -> None:
    schedule = cron("30 2 * * *", NEW_YORK, gap=gap)

    assert next_fire_times(schedule, utc(2025, 3, 8, 12), 2) == expected


@pytest.mark.parametrize(
    ("fold", "expected"),
    [
        (FoldPolicy.FIRST, [utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30)]),
        (FoldPolicy.LAST, [utc(2025, 11, 2, 6, 30), utc(2025, 11, 3, 6, 30)]),
        (FoldPolicy.BOTH, [utc(2025, 11, 2, 5, 30), utc(2025, 11, 2, 6, 30)]),
    ],
)
def test_new_york_repeated_hour_follows_fold_policy(
    fold: FoldPolicy, expected: list[datetime]
) -> None:
    schedule = cron("30 1 * * *", NEW_YORK, fold=fold)

    assert next_fire_times(schedule, utc(2025, 11, 1, 12), 2) == expected


def test_new_york_quarter_hour_cron_shifts_gap_to_transition_instant() -> None:
    schedule = cron("*/15 * * * *", NEW_YORK)

    fires = slots_between(schedule, utc(2025, 3, 9, 6, 40), utc(2025, 3, 9, 7, 20), limit=10)

    assert fires == [utc(2025, 3, 9, 6, 45), utc(2025, 3, 9, 7, 0), utc(2025, 3, 9, 7, 15)]


def test_wall_times_outside_transitions_ignore_dst_policy() -> None:
    policies = [cron("0 9 * * *", BERLIN, gap=g, fold=f) for g in GapPolicy for f in FoldPolicy]

    results = {s.next_after(utc(2025, 10, 25, 12)) for s in policies}

    assert results == {utc(2025, 10, 26, 8)}


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * *",
        "a b c d e",
        "@daily",
        "0 0 30 2 *",
        "H * * * *",
    ],
)
def test_invalid_expression_is_refused_naming_the_cron_field(expression: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        CronSchedule(expression)
    assert info.value.field == "schedule.cron"


def test_impossible_date_is_refused_at_construction() -> None:
    with pytest.raises(InvalidSchedule, match="never matches"):
        CronSchedule("0 0 31 4 *")


@pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "", "Europe", "../etc/passwd", "utc "])
def test_unknown_timezone_is_refused_naming_the_timezone_field(timezone: str) -> None:
    with pytest.raises(InvalidSchedule) as info:
        CronSchedule("* * * * *", timezone)
    assert info.value.field == "schedule.timezone"


def test_unknown_dst_policy_value_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidSchedule) as info:
        DstPolicy(gap="jump")  # type: ignore[arg-type]
    assert info.value.field == "schedule.dst_gap"


def test_expression_whitespace_is_normalised() -> None:
    assert CronSchedule("  0   2 * *  * ") == CronSchedule("0 2 * * *")


def test_leap_day_cron_finds_the_next_leap_year_across_a_non_leap_century() -> None:
    schedule = cron("0 0 29 2 *")

    assert schedule.next_after(utc(2097, 3, 1)) == utc(2104, 2, 29)


# -- properties -----------------------------------------------------------------------------------

EXPRESSIONS = [
    "30 2 * * *",
    "*/15 * * * *",
    "0 1-3 * * *",
    "45 0,1,2,3 * * *",
    "0 0 * * 0",
    "*/20 2 * * * *",
]
ZONES = [
    "UTC",
    BERLIN,
    NEW_YORK,
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Pacific/Chatham",
]
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
schedules = st.builds(
    cron,
    st.sampled_from(EXPRESSIONS),
    st.sampled_from(ZONES),
    gap=st.sampled_from(list(GapPolicy)),
    fold=st.sampled_from(list(FoldPolicy)),
)


@settings(max_examples=300, deadline=None)
@given(schedule=schedules, start=instants)
def test_iterating_next_after_is_strictly_increasing(
    schedule: CronSchedule, start: datetime
) -> None:
    previous = start
    for _ in range(12):
        fire = schedule.next_after(previous)
        assert fire is not None
        assert fire > previous
        assert fire.microsecond == 0
        assert fire.tzinfo is UTC
        previous = fire


@settings(max_examples=200, deadline=None)
@given(schedule=schedules, start=instants)
def test_next_after_never_skips_a_fire_time(schedule: CronSchedule, start: datetime) -> None:
    fire = schedule.next_after(start)
    assert fire is not None
    # Starting anywhere between ``start`` and the fire time must land on the same fire time.
    midpoint = start + (fire - start) / 2
    assert schedule.next_after(midpoint) == fire
    assert schedule.next_after(fire - timedelta(seconds=1)) == fire


@settings(max_examples=200, deadline=None)
@given(expression=st.sampled_from(EXPRESSIONS), start=instants)
def test_utc_schedule_matches_cronsim_directly(expression: str, start: datetime) -> None:
    schedule = cron(expression)
    naive = start.replace(tzinfo=None, microsecond=0)
    expected = next(CronSim(expression, naive))

    assert schedule.next_after(start.replace(microsecond=0)) == expected.replace(tzinfo=UTC)


# -- reference model: brute force over every minute near real transitions -------------------------


def _transitions(zone: str) -> list[datetime]:
    """Every instant in 2024-2026 at which ``zone`` changes its UTC offset (hour resolution)."""
    tz = ZoneInfo(zone)
    found = []
    hour = utc(2024, 1, 1)
    previous = hour.astimezone(tz).utcoffset()
    while hour < utc(2027, 1, 1):
        hour += timedelta(hours=1)
        offset = hour.astimezone(tz).utcoffset()
        if offset != previous:
            found.append(hour)
        previous = offset
    return found


TRANSITIONS = [(zone, at) for zone in ZONES for at in _transitions(zone)]
MINUTE_EXPRESSIONS = [e for e in EXPRESSIONS if len(e.split()) == 5] + ["0,10,50 * * * *"]


def _brute_force(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Fire instants in ``(start, end]`` straight from the definition of the DST policies."""
    return fires_between(
        schedule.expression,
        schedule.timezone,
        schedule.dst.gap.value,
        schedule.dst.fold.value,
        start,
        end,
    )


@settings(max_examples=120, deadline=None)
@given(
    transition=st.sampled_from(TRANSITIONS),
    expression=st.sampled_from(MINUTE_EXPRESSIONS),
    gap=st.sampled_from(list(GapPolicy)),
    fold=st.sampled_from(list(FoldPolicy)),
    lead=st.integers(min_value=0, max_value=6 * 60),
)
def test_fires_near_real_transitions_match_brute_force_definition(
    transition: tuple[str, datetime],
    expression: str,
    gap: GapPolicy,
    fold: FoldPolicy,
    lead: int,
) -> None:
    zone, at = transition
    schedule = cron(expression, zone, gap=gap, fold=fold)
    start = at - timedelta(minutes=lead)
    end = at + timedelta(hours=6)

    assert slots_between(schedule, start, end, limit=10_000) == _brute_force(schedule, start, end)
