"""Misfire policies: which overdue slots still run after an outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import ValidationError
from scheduler_domain.misfire import MisfireKind, MisfirePolicy, SlotSelection, select_slots

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def policy(kind: MisfireKind, *, cap: int = 10, grace_s: int = 60) -> MisfirePolicy:
    return MisfirePolicy(kind=kind, catch_up_cap=cap, grace=timedelta(seconds=grace_s))


LATE = [ago(30), ago(20), ago(10)]


def test_slot_within_grace_fires_under_every_policy() -> None:
    for kind in MisfireKind:
        assert select_slots(policy(kind), [ago(0.5)], NOW) == SlotSelection((ago(0.5),), ())


def test_slot_exactly_at_the_grace_boundary_is_on_time() -> None:
    selection = select_slots(policy(MisfireKind.SKIP, grace_s=60), [ago(1)], NOW)

    assert selection.fire == (ago(1),)


def test_skip_policy_records_every_late_slot_as_missed() -> None:
    selection = select_slots(policy(MisfireKind.SKIP), LATE, NOW)

    assert selection == SlotSelection(fire=(), missed=tuple(LATE))


def test_run_once_policy_fires_only_the_latest_late_slot() -> None:
    selection = select_slots(policy(MisfireKind.RUN_ONCE), LATE, NOW)

    assert selection == SlotSelection(fire=(ago(10),), missed=(ago(30), ago(20)))


def test_run_once_policy_misses_all_late_slots_when_an_on_time_slot_fires() -> None:
    selection = select_slots(policy(MisfireKind.RUN_ONCE), [*LATE, ago(0)], NOW)

    assert selection == SlotSelection(fire=(ago(0),), missed=tuple(LATE))


def test_catch_up_policy_replays_the_newest_late_slots_up_to_the_cap() -> None:
    selection = select_slots(policy(MisfireKind.CATCH_UP, cap=2), LATE, NOW)

    assert selection == SlotSelection(fire=(ago(20), ago(10)), missed=(ago(30),))


def test_catch_up_policy_fires_on_time_slots_on_top_of_the_cap() -> None:
    selection = select_slots(policy(MisfireKind.CATCH_UP, cap=1), [*LATE, ago(0)], NOW)

    assert selection == SlotSelection(fire=(ago(10), ago(0)), missed=(ago(30), ago(20)))


def test_unordered_and_duplicated_slots_come_out_sorted_and_merged() -> None:
    selection = select_slots(policy(MisfireKind.CATCH_UP), [ago(10), ago(30), ago(10)], NOW)

    assert selection == SlotSelection(fire=(ago(30), ago(10)), missed=())


def test_no_due_slots_selects_nothing() -> None:
    assert select_slots(MisfirePolicy(), [], NOW) == SlotSelection((), ())


def test_default_policy_is_run_once_with_a_minute_of_grace() -> None:
    assert MisfirePolicy() == MisfirePolicy(MisfireKind.RUN_ONCE, 10, timedelta(seconds=60))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"catch_up_cap": 0}, "misfire.catch_up_cap"),
        ({"catch_up_cap": True}, "misfire.catch_up_cap"),
        ({"grace": timedelta(seconds=-1)}, "misfire.grace"),
        ({"kind": "sometimes"}, "misfire.kind"),
    ],
)
def test_invalid_policy_is_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        MisfirePolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValidationError):
        select_slots(MisfirePolicy(), [ago(1)], datetime(2025, 1, 1))


@given(
    kind=st.sampled_from(list(MisfireKind)),
    cap=st.integers(min_value=1, max_value=5),
    grace_s=st.integers(min_value=0, max_value=600),
    offsets=st.lists(st.integers(min_value=-60, max_value=7200), max_size=30),
)
def test_selection_partitions_the_distinct_input_in_order(
    kind: MisfireKind, cap: int, grace_s: int, offsets: list[int]
) -> None:
    slots = [NOW - timedelta(seconds=o) for o in offsets]
    chosen = policy(kind, cap=cap, grace_s=grace_s)

    selection = select_slots(chosen, slots, NOW)

    assert set(selection.fire) | set(selection.missed) == set(slots)
    assert not set(selection.fire) & set(selection.missed)
    assert list(selection.fire) == sorted(set(selection.fire))
    assert list(selection.missed) == sorted(set(selection.missed))
    on_time = {s for s in slots if NOW - s <= chosen.grace}
    assert on_time <= set(selection.fire)
    late_fired = set(selection.fire) - on_time
    if kind is MisfireKind.SKIP:
        assert not late_fired
    elif kind is MisfireKind.RUN_ONCE:
        assert len(late_fired) <= 1
    else:
        assert len(late_fired) <= cap
    # Whatever late slots fire are always the newest ones.
    assert all(m < f for m in selection.missed for f in late_fired)
