"""Placeholders and how often a schedule may fire (the bound a template puts on cron)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scheduler_domain.errors import ValidationError
from scheduler_domain.schedules import parse_schedule
from scheduler_domain.template import ScheduleBounds, min_gap, placeholders, render


@pytest.mark.parametrize(
    ("spec", "gap"),
    [
        ({"interval_seconds": 900}, timedelta(minutes=15)),
        ({"cron": "*/5 * * * *"}, timedelta(minutes=5)),
        ({"cron": "0,2 * * * *"}, timedelta(minutes=2)),
        ({"cron": "0 9,17 * * 1-5"}, timedelta(hours=8)),
        ({"cron": "0 0,23 * * *"}, timedelta(hours=1)),  # 23:00 to the next day's 00:00
        ({"cron": "30 4 1 * *"}, timedelta(days=1)),  # monthly: bounded below by a day
        ({"cron": "*/10 * * * * *"}, timedelta(seconds=10)),
        ({"cron": "0 59 23 * * *"}, timedelta(days=1)),
    ],
)
def test_min_gap_is_the_closest_two_slots_can_be(spec: dict[str, Any], gap: timedelta) -> None:
    schedule = parse_schedule(spec)
    assert schedule is not None
    assert min_gap(schedule) == gap


def test_bounds_name_the_schedule_field() -> None:
    bounds = ScheduleBounds(min_interval=timedelta(hours=2))
    with pytest.raises(ValidationError) as refused:
        bounds.check(parse_schedule({"cron": "0 0,23 * * *"}))
    assert refused.value.field == "schedule"
    assert "1 hour" in refused.value.message
    bounds.check(parse_schedule({"cron": "0 */2 * * *"}))
    bounds.check(parse_schedule({"at": "2031-01-01T00:00:00Z"}))
    bounds.check(None)


def test_render_fills_whole_values_and_text() -> None:
    template = {
        "argv": ["fetch", "{{city}}", "--retries={{ retries }}"],
        "json": {"n": "{{retries}}", "tags": "{{tags}}"},
        "{{city}}": "keys are left alone",
    }
    values = {"city": "São Paulo {{retries}}", "retries": 3, "tags": ["a", "b"]}
    assert render(template, values) == {
        "argv": ["fetch", "São Paulo {{retries}}", "--retries=3"],  # values are not re-scanned
        "json": {"n": 3, "tags": ["a", "b"]},
        "{{city}}": "keys are left alone",
    }
    assert placeholders(template) == {"city", "retries", "tags"}


def test_a_placeholder_without_a_value_names_the_parameter() -> None:
    with pytest.raises(ValidationError) as refused:
        render({"url": "https://x.example/{{city}}"}, {})
    assert refused.value.field == "params.city"
