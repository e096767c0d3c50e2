from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from application_fixtures import START, task_spec

from scheduler_application.tasks.spec import merge_patch, parse_task_spec, task_to_spec
from scheduler_domain.concurrency import ConcurrencyPolicy
from scheduler_domain.errors import ValidationError
from scheduler_domain.misfire import MisfireKind
from scheduler_domain.schedules import CronSchedule
from scheduler_domain.task import Task

EXAMPLE = {
    "name": "nightly-report",
    "executor": "shell",
    "params": {"argv": ["echo", "hi"]},
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin"},
    "retry": {"max_attempts": 3},
    "timeout_seconds": 600,
    "depends_on": [],
}


def test_the_documented_example_parses_with_defaults_for_the_rest() -> None:
    spec = parse_task_spec(EXAMPLE)
    assert spec.name == "nightly-report"
    assert isinstance(spec.schedule, CronSchedule)
    assert spec.schedule.timezone == "Europe/Berlin"
    assert spec.retry.max_attempts == 3
    assert spec.retry.base_delay == timedelta(seconds=10)
    assert spec.timeout == timedelta(minutes=10)
    assert (spec.queue, spec.priority, spec.enabled) == ("default", 5, True)
    assert spec.concurrency is ConcurrencyPolicy.ALLOW
    assert spec.misfire.kind is MisfireKind.RUN_ONCE


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
        ({"retry": {"max_attempts": "3"}}, "retry.max_attempts"),
        ({"retry": {"base_delay_seconds": -1}}, "retry.base_delay_seconds"),
        ({"retry": {"tries": 3}}, "retry.tries"),
        ({"misfire": {"policy": "sometimes"}}, "misfire.policy"),
        ({"misfire": {"catch_up_cap": 0}}, "misfire.catch_up_cap"),
        ({"schedule": {"cron": "61 * * * *"}}, "schedule.cron"),
        ({"schedule": {"cron": "0 2 * * *", "timezone": "Mars/Olympus"}}, "schedule.timezone"),
        ({"params": {"argv": []}}, "params.argv"),
        ({"priority": 10}, "priority"),
        ({"priority": True}, "priority"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"concurrency": "sometimes"}, "concurrency"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"labels": "gpu"}, "labels"),
        ({"depends_on": "other"}, "depends_on"),
        ({"name": "has spaces"}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        parse_task_spec({**EXAMPLE, **patch})
    assert error.value.field == field


@pytest.mark.parametrize(
    "key", ["owner_id", "id", "version", "next_run_at", "created_at", "status"]
)
def test_server_owned_fields_are_refused_by_name(key: str) -> None:
    with pytest.raises(ValidationError) as error:
        parse_task_spec({**EXAMPLE, key: "x"})
    assert error.value.field == key


@pytest.mark.parametrize("key", ["name", "executor"])
def test_name_and_executor_are_required(key: str) -> None:
    data = dict(EXAMPLE)
    del data[key]
    with pytest.raises(ValidationError) as error:
        parse_task_spec(data)
    assert error.value.field == key


def test_task_to_spec_round_trips_through_parse() -> None:
    full = task_spec(
        description="d",
        schedule={"interval_seconds": 90},
        queue="reports",
        priority=7,
        labels=["gpu", "eu"],
        strategy="least_loaded",
        timeout_seconds=30,
        retry={"max_attempts": 4, "base_delay_seconds": 2, "max_delay_seconds": 60},
        concurrency="forbid",
        max_concurrent=2,
        misfire={"policy": "catch_up", "catch_up_cap": 3, "grace_seconds": 5},
        spread_seconds=1.5,
        rate_limit="10/m",
        trigger_rule="all_done",
    )
    spec = parse_task_spec(full)
    task = Task(owner_id="o", created_at=START, updated_at=START, **spec.task_fields())
    again = parse_task_spec(task_to_spec(task))
    assert again == spec
    assert task_to_spec(task)["labels"] == ["eu", "gpu"]


def test_merge_patch_changes_only_given_keys_and_merges_retry() -> None:
    current = task_to_spec(
        Task(
            owner_id="o",
            created_at=START,
            updated_at=START,
            **parse_task_spec(EXAMPLE).task_fields(),
        )
    )
    merged = merge_patch(current, {"retry": {"base_delay_seconds": 5}, "description": "x"})
    assert merged["retry"]["max_attempts"] == 3
    assert merged["retry"]["base_delay_seconds"] == 5
    assert merged["description"] == "x"
    assert merged["schedule"] == current["schedule"]
    with pytest.raises(ValidationError) as error:
        merge_patch(current, {"owner_id": "mallory"})
    assert error.value.field == "owner_id"
