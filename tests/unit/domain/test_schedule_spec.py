"""The JSON form of schedules users write, and its exact round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import InvalidSchedule
from scheduler_domain.schedules import (
    CronSchedule,
    DstPolicy,
    FoldPolicy,
    GapPolicy,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    parse_schedule,
    schedule_to_spec,
)


def test_cron_spec_with_every_key_parses_to_the_described_schedule() -> None:
    spec = {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "dst_gap": "skip", "dst_fold": "both"}

    assert parse_schedule(spec) == CronSchedule(
        "0 2 * * *", "Europe/Berlin", DstPolicy(gap=GapPolicy.SKIP, fold=FoldPolicy.BOTH)
    )


def test_cron_spec_defaults_to_utc_shift_and_first() -> None:
    assert parse_schedule({"cron": "*/5 * * * *"}) == CronSchedule("*/5 * * * *")


def test_interval_spec_parses_seconds_and_optional_anchor() -> None:
    assert parse_schedule({"interval_seconds": 300}) == IntervalSchedule(timedelta(minutes=5))
    assert parse_schedule(
        {"interval_seconds": 60, "anchor": "2025-01-01T00:00:30Z"}
    ) == IntervalSchedule(timedelta(minutes=1), anchor=datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC))


def test_once_spec_parses_an_iso_instant_with_offset() -> None:
    assert parse_schedule({"at": "2026-01-01T01:00:00+01:00"}) == OnceSchedule(
        datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_no_schedule_is_none_both_ways() -> None:
    assert parse_schedule(None) is None
    assert schedule_to_spec(None) is None


@pytest.mark.parametrize(
    "spec",
    [
        {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "dst_gap": "shift", "dst_fold": "first"},
        {"cron": "*/15 * * * * *", "timezone": "UTC", "dst_gap": "skip", "dst_fold": "last"},
        {"interval_seconds": 300},
        {"interval_seconds": 86400, "anchor": "2025-06-01T04:00:00Z"},
        {"at": "2026-01-01T00:00:00Z"},
        {"at": "2026-01-01T00:00:00.250000Z"},
    ],
)
def test_canonical_spec_survives_a_round_trip_unchanged(spec: dict[str, object]) -> None:
    assert schedule_to_spec(parse_schedule(spec)) == spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"cron": "0 2 * * *", "tz": "UTC"}, "schedule.tz"),
        ({"interval_seconds": 60, "timezone": "UTC"}, "schedule.timezone"),
        ({"at": "2026-01-01T00:00:00Z", "anchor": "2026-01-01T00:00:00Z"}, "schedule.anchor"),
        ({"cron": "0 2 * * *", "dst_gap": "jump"}, "schedule.dst_gap"),
        ({"cron": "0 2 * * *", "dst_fold": 1}, "schedule.dst_fold"),
        ({"cron": "0 2 * * *", "timezone": "Nowhere/Land"}, "schedule.timezone"),
        ({"cron": 5}, "schedule.cron"),
        ({"cron": "bad"}, "schedule.cron"),
        ({"interval_seconds": "300"}, "schedule.interval_seconds"),
        ({"interval_seconds": True}, "schedule.interval_seconds"),
        ({"interval_seconds": 0}, "schedule.interval_seconds"),
        ({"interval_seconds": 1.5}, "schedule.interval_seconds"),
        ({"interval_seconds": 10**20}, "schedule.interval_seconds"),
        ({"interval_seconds": 60, "anchor": "2025-01-01T00:00:00"}, "schedule.anchor"),
        ({"at": "tomorrow"}, "schedule.at"),
        ({"at": 1767225600}, "schedule.at"),
        ({}, "schedule"),
        ({"cron": "0 2 * * *", "at": "2026-01-01T00:00:00Z"}, "schedule"),
    ],
)
def test_bad_spec_is_refused_naming_the_offending_field(
    spec: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_schedule(spec)
    assert info.value.field == field


def test_unknown_key_is_named_in_the_message() -> None:
    with pytest.raises(InvalidSchedule, match="'every'"):
        parse_schedule({"interval_seconds": 60, "every": 60})


instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
any_schedule: st.SearchStrategy[Schedule] = st.one_of(
    st.builds(
        CronSchedule,
        st.sampled_from(["0 2 * * *", "*/15 * * * *", "0 0 1 * *", "5 */2 * * * *"]),
        st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
        st.builds(DstPolicy, st.sampled_from(list(GapPolicy)), st.sampled_from(list(FoldPolicy))),
    ),
    st.builds(
        IntervalSchedule,
        st.integers(min_value=1, max_value=10**7).map(lambda s: timedelta(seconds=s)),
        st.none() | instants,
    ),
    st.builds(OnceSchedule, instants),
)


@given(schedule=any_schedule)
def test_every_schedule_round_trips_through_its_spec(schedule: Schedule) -> None:
    spec = schedule_to_spec(schedule)

    assert parse_schedule(spec) == schedule
    assert schedule_to_spec(parse_schedule(spec)) == spec
