"""Retry policy: exponential backoff with a cap and jitter, and the attempt budget."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import ValidationError
from scheduler_domain.retry import RetryPolicy

S = timedelta(seconds=1)


def test_backoff_doubles_from_the_base_delay() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=10 * S, max_delay=3600 * S)

    assert [policy.backoff(n) for n in range(1, 5)] == [10 * S, 20 * S, 40 * S, 80 * S]


def test_backoff_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_attempts=20, base_delay=10 * S, max_delay=60 * S)

    assert policy.backoff(3) == 40 * S
    assert policy.backoff(4) == 60 * S
    assert policy.backoff(19) == 60 * S


def test_backoff_for_a_huge_attempt_number_does_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=S, max_delay=timedelta(days=365))

    assert policy.backoff(10**12) == timedelta(days=365)


def test_zero_base_delay_retries_immediately() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(0), max_delay=timedelta(0))

    assert policy.backoff(10**6) == timedelta(0)


def test_jitter_adds_up_to_its_width_reproducibly_with_a_seeded_rng() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=10 * S, max_delay=60 * S, jitter=5 * S)

    first = policy.backoff(1, rng=random.Random(42))
    second = policy.backoff(1, rng=random.Random(42))

    assert first == second
    assert 10 * S <= first <= 15 * S
    assert first != 10 * S


def test_jitter_without_an_rng_still_stays_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=S, max_delay=S, jitter=S)

    delays = {policy.backoff(1) for _ in range(50)}

    assert all(S <= d <= 2 * S for d in delays)
    assert len(delays) > 1


def test_attempts_left_until_max_attempts_reached() -> None:
    policy = RetryPolicy(max_attempts=3)

    assert [policy.has_attempts_left(n) for n in (1, 2, 3, 4)] == [True, True, False, False]


def test_default_policy_does_not_retry() -> None:
    assert not RetryPolicy().has_attempts_left(1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "retry.max_attempts"),
        ({"max_attempts": 1001}, "retry.max_attempts"),
        ({"max_attempts": True}, "retry.max_attempts"),
        ({"base_delay": -S}, "retry.base_delay"),
        ({"max_delay": -S, "base_delay": timedelta(0)}, "retry.max_delay"),
        ({"jitter": -S}, "retry.jitter"),
        ({"base_delay": 10 * S, "max_delay": 5 * S}, "retry.base_delay"),
    ],
)
def test_invalid_policy_is_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_attempt_below_one_is_refused() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy().backoff(0)


delays = st.integers(min_value=0, max_value=10**11).map(lambda us: timedelta(microseconds=us))


@given(
    base=delays,
    extra=delays,
    jitter=delays,
    attempt=st.integers(min_value=1, max_value=10**6),
    seed=st.integers(),
)
def test_backoff_stays_between_zero_and_max_delay_plus_jitter(
    base: timedelta, extra: timedelta, jitter: timedelta, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=base, max_delay=base + extra, jitter=jitter)

    delay = policy.backoff(attempt, rng=random.Random(seed))

    assert timedelta(0) <= delay <= policy.max_delay + policy.jitter


@given(base=delays, extra=delays, attempts=st.integers(min_value=2, max_value=80))
def test_backoff_without_jitter_never_decreases(
    base: timedelta, extra: timedelta, attempts: int
) -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=base, max_delay=base + extra)

    series = [policy.backoff(n) for n in range(1, attempts + 1)]

    assert series == sorted(series)
    assert series[0] == base
