"""Paging, ids and instants as the controllers read them, and the documented task body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler_api.openapi import task_body_schema
from scheduler_api.params import instant, object_id, page_size, slice_page
from scheduler_api.services import ApiOptions
from scheduler_application.errors import NotFound
from scheduler_application.tasks.spec import WRITE_ONLY_FIELDS, parse_task_spec, task_to_spec
from scheduler_domain.errors import ValidationError
from scheduler_domain.task import Task


def test_limits_are_clamped_to_the_cap() -> None:
    options = ApiOptions(max_page_size=200)

    assert page_size(1_000_000, options) == 200
    assert page_size(7, options) == 7
    with pytest.raises(ValidationError):
        page_size(0, options)


def test_the_cap_never_exceeds_the_applications() -> None:
    assert ApiOptions(max_page_size=10**9).page_cap == 500


def test_non_uuid_ids_are_not_found() -> None:
    assert object_id("01900000-0000-7000-8000-000000000000", kind="task", field="task_id")
    with pytest.raises(NotFound):
        object_id("../etc/passwd", kind="task", field="task_id")


def test_instants_must_be_aware_and_in_range() -> None:
    berlin = datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))

    assert instant(berlin, field="t") == datetime(2030, 1, 1, tzinfo=UTC)
    assert instant(None, field="t") is None
    with pytest.raises(ValidationError):
        instant(datetime(2030, 1, 1), field="t")
    with pytest.raises(ValidationError):
        instant(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))), field="t")


def test_in_memory_pages_follow_the_cursor() -> None:
    items = [("b", "2"), ("a", "1"), ("c", "3")]

    first, cursor = slice_page(items, key=lambda i: i, limit=2, cursor=None)
    rest, end = slice_page(items, key=lambda i: i, limit=2, cursor=cursor)

    assert first == [("a", "1"), ("b", "2")]
    assert rest == [("c", "3")]
    assert end is None
    with pytest.raises(ValidationError):
        slice_page(items, key=lambda i: i, limit=2, cursor="not-a-cursor")


def test_documented_task_body_lists_exactly_what_parse_task_spec_accepts() -> None:
    spec = parse_task_spec({"name": "x", "executor": "noop"})
    epoch = datetime(2030, 1, 1, tzinfo=UTC)
    canonical = task_to_spec(
        Task(owner_id="o", created_at=epoch, updated_at=epoch, **spec.task_fields())
    )

    schema = task_body_schema(patch=False)

    assert set(schema["properties"]) == set(canonical) | WRITE_ONLY_FIELDS
    assert schema["required"] == ["name", "executor"] or set(schema["required"]) == {
        "name",
        "executor",
    }
    assert schema["additionalProperties"] is False
    assert "required" not in task_body_schema(patch=True)
    parse_task_spec(canonical)
