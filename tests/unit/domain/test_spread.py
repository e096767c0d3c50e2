"""Spread offsets: deterministic, in the window, and well spread over it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import ValidationError
from scheduler_domain.spread import spread_offset

SLOT = datetime(2025, 1, 1, 12, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def test_same_task_and_slot_always_get_the_same_offset() -> None:
    assert spread_offset("task-1", SLOT, WINDOW) == spread_offset("task-1", SLOT, WINDOW)


def test_same_slot_written_in_another_offset_gets_the_same_offset() -> None:
    elsewhere = SLOT.astimezone(timezone(timedelta(hours=-5)))

    assert spread_offset("task-1", elsewhere, WINDOW) == spread_offset("task-1", SLOT, WINDOW)


def test_offset_changes_with_the_slot() -> None:
    offsets = {spread_offset("task-1", SLOT + timedelta(hours=h), WINDOW) for h in range(20)}

    assert len(offsets) > 15


def test_zero_window_means_no_delay() -> None:
    assert spread_offset("task-1", SLOT, timedelta(0)) == timedelta(0)
    assert spread_offset("task-1", SLOT, timedelta(microseconds=900)) == timedelta(0)


def test_offsets_of_many_tasks_cover_the_window_evenly() -> None:
    offsets = [spread_offset(f"task-{i}", SLOT, WINDOW) for i in range(10_000)]

    buckets = [0] * 10
    for offset in offsets:
        buckets[int(offset / WINDOW * 10)] += 1
    assert all(800 < count < 1200 for count in buckets)


def test_negative_window_and_naive_slot_are_refused() -> None:
    with pytest.raises(ValidationError):
        spread_offset("task-1", SLOT, timedelta(seconds=-1))
    with pytest.raises(ValidationError):
        spread_offset("task-1", datetime(2025, 1, 1), WINDOW)


@given(
    task_id=st.text(max_size=40),
    slot=st.datetimes(timezones=st.just(UTC)),
    window_us=st.integers(min_value=0, max_value=86_400 * 10**6),
)
def test_offset_is_whole_milliseconds_within_the_window(
    task_id: str, slot: datetime, window_us: int
) -> None:
    window = timedelta(microseconds=window_us)

    offset = spread_offset(task_id, slot, window)

    assert offset % timedelta(milliseconds=1) == timedelta(0)
    assert timedelta(0) <= offset
    assert offset < window or offset == window == timedelta(0)
