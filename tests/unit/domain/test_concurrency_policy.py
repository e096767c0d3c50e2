"""Concurrency policies: what a new slot does while earlier runs are active or waiting."""

from __future__ import annotations

import pytest

from scheduler_domain.concurrency import (
    ConcurrencyAction,
    ConcurrencyDecision,
    ConcurrencyPolicy,
    decide_concurrency,
)
from scheduler_domain.errors import ValidationError

CREATE = ConcurrencyDecision(ConcurrencyAction.CREATE, None)


@pytest.mark.parametrize(("active", "waiting"), [(0, 0), (1, 0), (0, 1), (5, 5)])
def test_allow_policy_always_creates(active: int, waiting: int) -> None:
    assert decide_concurrency(ConcurrencyPolicy.ALLOW, active=active, waiting=waiting) == CREATE


def test_forbid_policy_skips_slot_while_run_active() -> None:
    decision = decide_concurrency(ConcurrencyPolicy.FORBID, active=1, waiting=0)

    assert decision == ConcurrencyDecision(ConcurrencyAction.SKIP, "forbid")


def test_forbid_policy_skips_slot_while_run_waiting_to_start() -> None:
    decision = decide_concurrency(ConcurrencyPolicy.FORBID, active=0, waiting=1)

    assert decision == ConcurrencyDecision(ConcurrencyAction.SKIP, "forbid")


def test_forbid_policy_creates_when_nothing_runs() -> None:
    assert decide_concurrency(ConcurrencyPolicy.FORBID, active=0, waiting=0) == CREATE


@pytest.mark.parametrize(("active", "waiting"), [(1, 0), (0, 1), (2, 1)])
def test_replace_policy_asks_to_cancel_existing_runs(active: int, waiting: int) -> None:
    decision = decide_concurrency(ConcurrencyPolicy.REPLACE, active=active, waiting=waiting)

    assert decision == ConcurrencyDecision(ConcurrencyAction.REPLACE, None)


def test_replace_policy_creates_when_nothing_runs() -> None:
    assert decide_concurrency(ConcurrencyPolicy.REPLACE, active=0, waiting=0) == CREATE


def test_buffer_one_policy_queues_one_run_behind_an_active_one() -> None:
    assert decide_concurrency(ConcurrencyPolicy.BUFFER_ONE, active=3, waiting=0) == CREATE


def test_buffer_one_policy_skips_when_a_run_is_already_waiting() -> None:
    decision = decide_concurrency(ConcurrencyPolicy.BUFFER_ONE, active=1, waiting=1)

    assert decision == ConcurrencyDecision(ConcurrencyAction.SKIP, "buffer_full")


def test_policy_given_as_its_string_value_is_accepted() -> None:
    decision = decide_concurrency("forbid", active=1, waiting=0)  # type: ignore[arg-type]

    assert decision.reason == "forbid"


@pytest.mark.parametrize(("active", "waiting"), [(-1, 0), (0, -1)])
def test_negative_counts_are_refused(active: int, waiting: int) -> None:
    with pytest.raises(ValidationError):
        decide_concurrency(ConcurrencyPolicy.ALLOW, active=active, waiting=waiting)


def test_unknown_policy_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        decide_concurrency("sometimes", active=0, waiting=0)  # type: ignore[arg-type]
    assert info.value.field == "concurrency"
