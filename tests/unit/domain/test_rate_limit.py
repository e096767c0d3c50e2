"""Rate limits: parsing what users write and the canonical form we write back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler_domain.errors import InvalidRateLimit
from scheduler_domain.rate_limit import RateLimit


@pytest.mark.parametrize(
    ("text", "count", "seconds"),
    [
        ("100/s", 100, 1),
        ("10/m", 10, 60),
        ("1000/h", 1000, 3600),
        ("5/10s", 5, 10),
        ("3/2m", 3, 120),
        ("7/sec", 7, 1),
        ("7/second", 7, 1),
        ("2/min", 2, 60),
        ("2/minute", 2, 60),
        ("1/hour", 1, 3600),
        ("4/30seconds", 4, 30),
        ("  20 / 5 M  ", 20, 300),
    ],
)
def test_accepted_forms_parse_to_count_and_period(text: str, count: int, seconds: int) -> None:
    assert RateLimit.parse(text) == RateLimit(count, timedelta(seconds=seconds))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not of the form"),
        ("100", "not of the form"),
        ("/s", "not of the form"),
        ("ten/s", "not of the form"),
        ("-1/s", "not of the form"),
        ("1.5/s", "not of the form"),
        ("10/d", "unknown unit 'd'"),
        ("10/fortnight", "unknown unit"),
        ("0/s", "count must be at least 1"),
        ("5/0s", "empty period"),
        ("1/99999999999999999999h", "too long"),
    ],
)
def test_bad_text_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidRateLimit, match=problem) as info:
        RateLimit.parse(text)
    assert info.value.field == "rate_limit"


def test_sub_second_period_is_refused() -> None:
    with pytest.raises(InvalidRateLimit):
        RateLimit(1, timedelta(milliseconds=500))


def test_per_second_is_count_over_period() -> None:
    assert RateLimit.parse("10/m").per_second == pytest.approx(1 / 6)
    assert RateLimit.parse("100/s").per_second == 100.0


def test_capacity_is_the_count_so_a_full_bucket_allows_that_burst() -> None:
    assert RateLimit.parse("5/10s").capacity == 5


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("100/s", "100/s"),
        ("10/60s", "10/m"),
        ("3/120 sec", "3/2m"),
        ("1/3600s", "1/h"),
        ("1/90s", "1/90s"),
        ("2/7200s", "2/2h"),
    ],
)
def test_str_gives_the_shortest_canonical_form(text: str, canonical: str) -> None:
    assert str(RateLimit.parse(text)) == canonical


@given(
    count=st.integers(min_value=1, max_value=10**9),
    seconds=st.integers(min_value=1, max_value=10**7),
)
def test_str_parses_back_to_an_equal_limit(count: int, seconds: int) -> None:
    limit = RateLimit(count, timedelta(seconds=seconds))

    assert RateLimit.parse(str(limit)) == limit
