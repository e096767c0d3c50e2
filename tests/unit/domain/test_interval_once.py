"""Interval and one-off schedules, and the helpers that list slots of any schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import InvalidSchedule, ValidationError
from scheduler_domain.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    next_fire_times,
    slots_between,
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_interval_without_anchor_is_aligned_to_the_unix_epoch() -> None:
    schedule = IntervalSchedule(timedelta(minutes=5))

    assert schedule.next_after(utc(2025, 1, 1, 10, 7, 30)) == utc(2025, 1, 1, 10, 10)


def test_interval_slots_are_the_same_whichever_instant_they_are_computed_from() -> None:
    schedule = IntervalSchedule(timedelta(seconds=7))
    slots = next_fire_times(schedule, utc(2025, 1, 1), 50)

    restarted = next_fire_times(schedule, slots[20] - timedelta(milliseconds=1), 5)

    assert restarted == slots[20:25]


def test_interval_next_after_is_strictly_after_a_slot() -> None:
    schedule = IntervalSchedule(timedelta(hours=1), anchor=utc(2025, 1, 1, 0, 30))

    assert schedule.next_after(utc(2025, 1, 1, 3, 30)) == utc(2025, 1, 1, 4, 30)


def test_interval_counts_back_from_an_anchor_in_the_future() -> None:
    schedule = IntervalSchedule(timedelta(hours=1), anchor=utc(2030, 1, 1, 0, 30))

    assert schedule.next_after(utc(2025, 1, 1, 3, 45)) == utc(2025, 1, 1, 4, 30)


def test_interval_anchor_in_another_offset_is_normalised_to_utc() -> None:
    anchor = datetime(2025, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))

    schedule = IntervalSchedule(timedelta(days=1), anchor=anchor)

    assert schedule.anchor == utc(2025, 1, 1)
    assert schedule.anchor is not None
    assert schedule.anchor.tzinfo is UTC


def test_interval_ignores_dst_because_it_counts_elapsed_time() -> None:
    schedule = IntervalSchedule(timedelta(hours=1), anchor=utc(2025, 3, 30))

    fires = next_fire_times(schedule, utc(2025, 3, 30, 0, 30), 3)

    assert fires == [utc(2025, 3, 30, 1), utc(2025, 3, 30, 2), utc(2025, 3, 30, 3)]


@pytest.mark.parametrize(
    "every",
    [timedelta(0), timedelta(milliseconds=999), timedelta(seconds=-5), timedelta(seconds=1.5)],
)
def test_interval_shorter_than_a_second_or_fractional_is_refused(every: timedelta) -> None:
    with pytest.raises(InvalidSchedule) as info:
        IntervalSchedule(every)
    assert info.value.field == "schedule.every"


def test_interval_with_naive_anchor_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        IntervalSchedule(timedelta(seconds=10), anchor=datetime(2025, 1, 1))
    assert info.value.field == "schedule.anchor"


@given(
    every=st.integers(min_value=1, max_value=10 * 86_400),
    offset=st.integers(min_value=-(10**9), max_value=10**9),
    after=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_interval_next_after_is_the_first_grid_point_past_the_input(
    every: int, offset: int, after: datetime
) -> None:
    anchor = utc(2025, 1, 1) + timedelta(seconds=offset)
    schedule = IntervalSchedule(timedelta(seconds=every), anchor=anchor)

    fire = schedule.next_after(after)

    assert fire is not None
    assert after < fire <= after + timedelta(seconds=every)
    assert (fire - anchor) % timedelta(seconds=every) == timedelta(0)


def test_once_fires_at_its_instant_and_then_never_again() -> None:
    schedule = OnceSchedule(utc(2026, 1, 1))

    assert schedule.next_after(utc(2025, 12, 31, 23, 59, 59)) == utc(2026, 1, 1)
    assert schedule.next_after(utc(2026, 1, 1)) is None
    assert next_fire_times(schedule, utc(2025, 1, 1), 5) == [utc(2026, 1, 1)]


def test_once_with_naive_instant_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        OnceSchedule(datetime(2026, 1, 1))
    assert info.value.field == "schedule.at"


def test_slots_between_excludes_start_and_includes_end() -> None:
    schedule = IntervalSchedule(timedelta(minutes=10))

    slots = slots_between(schedule, utc(2025, 1, 1, 0, 0), utc(2025, 1, 1, 0, 30), limit=10)

    assert slots == [utc(2025, 1, 1, 0, 10), utc(2025, 1, 1, 0, 20), utc(2025, 1, 1, 0, 30)]


def test_slots_between_returns_only_the_earliest_slots_up_to_the_limit() -> None:
    schedule = CronSchedule("* * * * *")

    slots = slots_between(schedule, utc(2025, 1, 1), utc(2025, 1, 8), limit=3)

    assert slots == [utc(2025, 1, 1, 0, 1), utc(2025, 1, 1, 0, 2), utc(2025, 1, 1, 0, 3)]


def test_slots_between_an_empty_window_is_empty() -> None:
    schedule = IntervalSchedule(timedelta(hours=1))

    assert slots_between(schedule, utc(2025, 1, 1, 0, 1), utc(2025, 1, 1, 0, 59), limit=5) == []
    assert slots_between(schedule, utc(2025, 1, 1), utc(2025, 1, 2), limit=0) == []


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        slots_between(OnceSchedule(utc(2025, 1, 1)), utc(2024, 1, 1), utc(2026, 1, 1), limit=-1)
    assert info.value.field == "limit"


def test_next_fire_times_stops_when_the_schedule_is_exhausted() -> None:
    assert next_fire_times(OnceSchedule(utc(2025, 1, 1)), utc(2025, 1, 1), 3) == []
